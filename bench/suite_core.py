"""The suite's pieces that do not schedule: tasks, jobs, presets and settings, pinned
sources and the JSON line of a finished run (see ``bench/suite.py``).

A run's identity is its settings: the config ``natgrad train`` resolves from the preset
and ``--set`` (:func:`resolve_config`), less the fields that change only how it executes
(:data:`EXEC_FIELDS`), hashed (:func:`settings_hash`).  So a ``--set`` variant that later
becomes the preset counts as a preset run, and a preset change starts new runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "suite.jsonl"
OUT = ROOT / "bench" / "out" / "suite"
PAUSE_FILE = Path("/work/PAUSE_SUITE")
TASKS = ("Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Swimmer-v5", "Humanoid-v5",
         "Reacher-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5")  # fmt: skip
ALGOS = ("trpo", "npg")
CURVE_POINTS = 200


@dataclass(frozen=True)
class Job:
    """One training: env, algorithm, seed, step budget and ``--set`` overrides (as text)."""

    env: str
    algo: str
    seed: int
    steps: int
    overrides: tuple[tuple[str, str], ...] = field(default=())

    @property
    def tag(self) -> str:
        """``preset``, or a short name of the overrides (the run directory's name)."""
        if not self.overrides:
            return "preset"
        text = ",".join(f"{k}={v}" for k, v in self.overrides)
        safe = "".join(c if c.isalnum() or c in "=.,-_" else "_" for c in text)
        return safe if len(safe) <= 60 else hashlib.sha1(text.encode()).hexdigest()[:12]


# --- presets (read as data: the digest says which preset tables a run used) ------------
def _family(env_id: str) -> str:
    import gymnasium as gym

    spec = gym.registry.get(env_id)
    entry = str(getattr(spec, "entry_point", "")) if spec is not None else ""
    if "envs.mujoco" in entry:
        return "mujoco"
    return "classic_control" if "envs.classic_control" in entry else "other"


def preset_tables(src: Path, env_id: str, algo: str) -> dict[str, Any]:
    """The preset tables that apply to ``env_id`` and ``algo``, without their ``source``."""
    import tomllib

    data = tomllib.loads((src / "natgrad" / "presets" / "trpo.toml").read_text(encoding="utf-8"))

    def strip(table: dict[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (table or {}).items() if k != "source" and k != "npg"}

    family = _family(env_id)
    own = data.get("envs", {}).get(env_id)
    tables = {"defaults": strip(data["defaults"].get(family)), "env": strip(own)}
    if algo == "npg":  # algorithm-specific layers, if the preset file has them
        tables["npg_defaults"] = strip(data.get("npg", {}).get("defaults", {}).get(family))
        tables["npg_env"] = strip((own or {}).get("npg"))
    return tables


def preset_digest(src: Path, env_id: str, algo: str) -> str:
    """A short hash of :func:`preset_tables`: equal digests mean the same preset values."""
    text = json.dumps(preset_tables(src, env_id, algo), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


# Fields that change how a run executes, not what it computes (bit-identical results).
EXEC_FIELDS = frozenset({"env_id", "seed", "total_steps", "critic_worker", "checkpoint_every",
                         "tensorboard", "threads", "vec", "workers", "ray_address", "fast_paths",
                         "step_timeout", "eval_every"})  # fmt: skip
_RESOLVE = """
import json, sys
from natgrad.rl.config import concern_classes, parse_value, split_fields
from natgrad.rl.presets import preset_for
out = []
for env, algo, overrides in json.loads(sys.stdin.read()):
    classes = concern_classes(algo)
    owner = {n: cls for cls in classes.values() for n in cls.field_names()}
    values = {k: parse_value(owner[k], k, v) for k, v in overrides.items()}
    try:
        preset = preset_for(env, algo)[0]
    except TypeError:  # a loader without algorithm-specific tables
        preset = preset_for(env)[0]
    parts = split_fields({**preset, **values}, algo)
    out.append({c: classes[c].from_dict(parts[c]).to_dict() for c in classes})
print(json.dumps(out))
"""
_resolved: dict[tuple, dict[str, Any]] = {}


def resolve_configs(src: Path, items: list[tuple[str, str, tuple]]) -> list[dict[str, Any]]:
    """The configs ``natgrad train`` builds from the preset and ``--set`` for each
    ``(env, algo, overrides)``, by the code in ``src`` (one subprocess for all)."""
    keys = [(str(src), e, a, tuple(sorted(o))) for e, a, o in items]
    todo = sorted({k for k in keys if k not in _resolved})
    if todo:
        payload = json.dumps([[e, a, dict(o)] for _, e, a, o in todo])
        out = subprocess.run([sys.executable, "-c", _RESOLVE], input=payload, text=True,
                             capture_output=True, env={**os.environ, "PYTHONPATH": str(src)},
                             check=False)  # fmt: skip
        if out.returncode != 0:
            raise ValueError(f"resolving {[k[1:] for k in todo]}: {out.stderr.strip()[-800:]}")
        for key, cfg in zip(todo, json.loads(out.stdout), strict=True):
            _resolved[key] = cfg
    return [_resolved[k] for k in keys]


def resolve_config(src: Path, env_id: str, algo: str, overrides: tuple = ()) -> dict[str, Any]:
    """The config ``natgrad train`` builds from the preset and ``--set`` (the code in ``src``)."""
    return resolve_configs(src, [(env_id, algo, overrides)])[0]


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config as one ``{field: value}`` (``config.json`` nests it by concern)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("algorithm", "policy", "rollout", "run") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


# Fields added to the configs later, left out at the value that means "off" (the code
# before them), so that runs from before they existed keep their identity.
NEUTRAL: dict[str, Any] = {"use_sde": False, "features_extractor": "auto", "features_dim": 0,
                           "features_extractor_kwargs": None, "kfac_inverse_every": 1,
                           "env_package": "", "env_wrapper": ""}  # fmt: skip
NEUTRAL_WITH = {"sde_sample_freq": ("use_sde", False)}  # meaningless while use_sde is off


def settings_hash(config: dict[str, Any]) -> str:
    """A short hash of what a run computes: its config less :data:`EXEC_FIELDS` (and less
    the :data:`NEUTRAL` fields at their neutral values)."""
    flat = flat_config(config)
    kept = {
        k: v
        for k, v in flat.items()
        if k not in EXEC_FIELDS
        and not (k in NEUTRAL and v == NEUTRAL[k])
        and not (k in NEUTRAL_WITH and flat.get(NEUTRAL_WITH[k][0], NEUTRAL_WITH[k][1])
                 == NEUTRAL_WITH[k][1])
    }  # fmt: skip
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


def run_key(job: Job, settings: str) -> tuple:
    return (job.env, job.algo, job.seed, job.steps, settings)


def line_key(line: dict[str, Any]) -> tuple:
    """A run's identity: env, algo, seed, steps and the settings it ran with, however they
    were asked for (a preset or the same values by ``--set``)."""
    return (line["env"], line["algo"], line["seed"], line["steps"], settings_hash(line["config"]))


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


# --- pinning the code -------------------------------------------------------------------
def pin_sources(repo: Path, out: Path) -> tuple[Path, str]:
    """A copy of ``repo/src`` under ``out`` and the commit it is (``-dirty+hash`` if edited).

    Runs in flight keep using their copy however the working tree changes later.
    """

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=False).stdout.strip()  # fmt: skip

    commit = git("rev-parse", "HEAD") or "unknown"
    diff = git("diff", "HEAD", "--", "src") + git(
        "ls-files", "--others", "--exclude-standard", "src"
    )
    if diff:
        commit += "-dirty+" + hashlib.sha1(diff.encode()).hexdigest()[:8]
    dest = out / "src" / commit[:60]
    if not (dest / "natgrad").exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(repo / "src", tmp, ignore=shutil.ignore_patterns("__pycache__"))
        tmp.rename(dest)
    return dest, commit


# --- one run ----------------------------------------------------------------------------
def command(job: Job, run_dir: Path, python: str) -> list[str]:
    cmd = [python, "-m", "natgrad.cli", "train", job.env, "--algo", job.algo,
           "--seed", str(job.seed), "--steps", str(job.steps), "--run-dir", str(run_dir),
           "--no-progress"]  # fmt: skip
    for k, v in job.overrides:
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _first_reach(steps: np.ndarray, wall: np.ndarray, ret: np.ndarray, level: float) -> dict | None:
    hit = np.flatnonzero(np.nan_to_num(ret, nan=-np.inf) >= level)
    if hit.size == 0:
        return None
    i = int(hit[0])
    return {"level": level, "env_steps": int(steps[i]), "wall_s": round(float(wall[i]), 2)}


def collect(job: Job, run_dir: Path, wall_s: float, commit: str, digest: str,
            thresholds: dict[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON line of a finished run, from its eval.json, progress.csv and config.json."""
    import csv

    ev = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    with open(run_dir / "progress.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["env_steps"]) for r in rows])
    ret = np.array([float(r["episode_return"] or "nan") for r in rows])
    t = np.array([float(r["wall_time"]) for r in rows])
    started = float(json.loads((run_dir / "suite_start.json").read_text())["time"])
    wall = t - started
    keep = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), CURVE_POINTS)).astype(int))
    rnd = lambda a, d: [None if not np.isfinite(x) else round(float(x), d) for x in a]  # noqa: E731
    return {
        "env": job.env, "algo": job.algo, "seed": job.seed, "steps": job.steps,
        "overrides": dict(job.overrides), "preset_digest": digest,
        "settings": settings_hash(cfg.get("config", cfg)),
        "eval": {"mean": ev["mean"], "std": ev["std"], "returns": ev["returns"]},
        "final_train_return": None if not np.isfinite(ret[-1]) else float(ret[-1]),
        "env_steps": int(steps[-1]),
        "wall_s": round(wall_s, 2), "steps_per_s": round(float(steps[-1]) / wall_s, 1),
        "first_reach": {name: _first_reach(steps, wall, ret, level)
                        for name, level in (thresholds or {}).items()},
        "curve": {"env_steps": [int(s) for s in steps[keep]], "wall_s": rnd(wall[keep], 2),
                  "episode_return": rnd(ret[keep], 2)},
        "commit": commit, "config": cfg.get("config", cfg),
        "preset_source": cfg.get("preset_source", ""),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_avg": os.getloadavg()[0],
    }  # fmt: skip
