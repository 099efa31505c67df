"""Learning benchmark: natgrad's TRPO presets over several seeds, judged by deterministic evaluation.

Each run is a normal run directory (progress.csv, checkpoint, plot) under
``--out``; the script prints one JSON line per env with each seed's final
evaluation (10 deterministic episodes) and the mean and std over seeds, and
draws the mean ± std learning curve of every env.

    python bench/learning.py --envs CartPole-v1,Pendulum-v1,InvertedPendulum-v5 --seeds 5
    python bench/learning.py --envs Hopper-v5 --seeds 3 --steps 1000000   # ~10 min here
    python bench/learning.py --envs CartPole-v1 --seeds 10 --first-seed 10 \
        --set batch_size=512 --set max_kl=0.02 --out bench/out/cartpole-zoo512   # a variant

Seeds run two at a time (one torch thread each). A finished run found under ``--out``
is reused, so give each variant (``--set``) its own ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np


def run_one(env_id: str, seed: int, steps: int | None, out: str, overrides: dict[str, Any]) -> dict:
    """Train one seed with the env's preset (``natgrad train``); returns its evaluation."""
    import contextlib

    from natgrad.cli import main as cli

    run_dir = Path(out) / env_id / f"seed{seed}"
    if not (run_dir / "eval.json").exists():  # else finished earlier: reuse
        args = ["train", "--no-progress"]
        if (run_dir / "checkpoint.pt").exists():
            args += ["--resume", str(run_dir)]
        else:
            args += [env_id, "--run-dir", str(run_dir), "--seed", str(seed)]
            args += [f"--set={k}={v}" for k, v in overrides.items()]
        if steps is not None:
            args += ["--steps", str(steps)]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"seed{seed}.log", "a") as log, contextlib.redirect_stdout(log):
            if cli(args) != 0:
                raise RuntimeError(f"{env_id} seed {seed} failed: see {log.name}")
    ev = json.loads((run_dir / "eval.json").read_text())
    return {"seed": seed, "eval_mean": ev["mean"], "run_dir": str(run_dir)}


def run(envs: list[str], seeds: int, steps: int | None, out: str, jobs: int = 2,
        overrides: dict[str, Any] | None = None, first_seed: int = 0) -> list[dict]:  # fmt: skip
    from natgrad.utils.plotting import plot_learning_curves

    results = []
    ctx = mp.get_context("spawn")
    for env_id in envs:
        seed_list = range(first_seed, first_seed + seeds)
        args = [(env_id, s, steps, out, overrides or {}) for s in seed_list]
        if jobs > 1:
            with ctx.Pool(jobs) as pool:
                per_seed = pool.starmap(run_one, args)
        else:
            per_seed = [run_one(*a) for a in args]
        means = [r["eval_mean"] for r in per_seed]
        plot = Path(out) / f"{env_id}.png"
        plot_learning_curves([Path(r["run_dir"]) for r in per_seed], plot)
        res = {"env": env_id, "seeds": list(seed_list), "steps": steps, "overrides": overrides or {},
               "eval_per_seed": means,
               "eval_mean": float(np.mean(means)), "eval_std": float(np.std(means)),
               "plot": str(plot)}  # fmt: skip
        print(json.dumps(res), flush=True)
        results.append(res)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="CartPole-v1,Pendulum-v1,InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--out", default="bench/out/learning")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    run(
        args.envs.split(","),
        args.seeds,
        args.steps,
        args.out,
        args.jobs,
        overrides,
        args.first_seed,
    )


if __name__ == "__main__":
    main()
