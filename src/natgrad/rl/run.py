"""A training run on disk, for ``natgrad train``: the run directory and its callbacks.

Layout of a run directory::

    config.json         the run: algo, env, spaces, every config, the preset's source
    progress.csv        one row per iteration (also as TensorBoard event files)
    checkpoint.pt       the latest consistent state, written atomically
    evaluations.npz     periodic evaluations (with eval_every > 0), best_model.pt
    learning_curve.png  episode return against env steps
    eval.json           the final deterministic evaluation

The training itself is :meth:`~natgrad.rl.TRPO.learn` with the callbacks of
:func:`run_callbacks`; resuming is :meth:`~natgrad.rl.TRPO.load` then ``learn``.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import numpy as np

from natgrad.rl.algos.base import OnPolicyAlgorithm
from natgrad.rl.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    InterruptCallback,
    LoggerCallback,
    ProgressBarCallback,
)
from natgrad.rl.config import RunConfig
from natgrad.utils.checkpoint import atomic_write
from natgrad.utils.plotting import plot_learning_curves

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "check_new_run_dir",
    "check_resume",
    "check_writable",
    "default_run_dir",
    "prepare_run_dir",
    "read_run_config",
    "run_callbacks",
    "run_payload",
    "summarise",
    "write_json",
]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


def default_run_dir(env: str, algo: str, seed: int, root: Path = Path("runs")) -> Path:
    """``runs/<env>_<algo>_seed<seed>``, with ``_2``, ``_3``... if it is taken."""
    base = root / f"{env.replace('/', '_').replace(':', '_')}_{algo}_seed{seed}"
    path, k = base, 2
    while path.exists() and any(path.iterdir()):
        path, k = base.with_name(f"{base.name}_{k}"), k + 1
    return path


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that already holds a run (nothing is created or changed)."""
    if (run_dir / CHECKPOINT).exists() or (run_dir / "progress.csv").exists():
        raise ValueError(
            f"--run-dir {run_dir} already holds a run; continue it with "
            f"`natgrad train --resume {run_dir}` or choose another --run-dir"
        )


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` for a new run, refusing one that holds a run or cannot be
    written (read-only, full disk): nothing in it is changed then."""
    check_new_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(_io_message(run_dir, err)) from None
    check_writable(run_dir)


def check_writable(run_dir: Path) -> None:
    """Refuse a run directory that cannot take a checkpoint (read-only or full)."""
    try:
        atomic_write(run_dir / ".natgrad-write-test", lambda f: f.write("x" * 4096))
        (run_dir / ".natgrad-write-test").unlink()
    except OSError as err:
        raise ValueError(_io_message(run_dir, err)) from None


def _io_message(run_dir: Path, err: OSError) -> str:
    why = {errno.EACCES: "it is not writable", errno.EROFS: "it is on a read-only file system",
           errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EPERM: "it is not writable"}.get(err.errno or 0, str(err))  # fmt: skip
    return (
        f"cannot write to the run directory {run_dir}: {why} ({err.strerror or err}); "
        "free some space, fix its permissions, or choose another --run-dir. Nothing was "
        "changed"
    )


def run_payload(
    model: OnPolicyAlgorithm, run: RunConfig, preset_source: str = ""
) -> dict[str, Any]:
    """What ``config.json`` holds for ``model`` trained with ``run``."""
    return {
        "algo": model.algo,
        "env_id": model.env_id,
        "env": model.env_source.describe(),
        "env_kwargs": dict(model.env_source.env_kwargs),
        "observation_space": repr(model.observation_space),
        "action_space": repr(model.action_space),
        "preset_source": preset_source,
        "config": {
            "algorithm": model.config.to_dict(),
            "policy": model.policy_config.to_dict(),
            "rollout": model.rollout_config.to_dict(),
            "run": run.to_dict(),
        },
    }


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """``config.json`` of a run directory (for ``--resume``)."""
    path = run_dir / CONFIG
    if not (run_dir / CHECKPOINT).exists():
        raise ValueError(f"--resume {run_dir}: no {CHECKPOINT} there; is it a natgrad run dir?")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        payload["config"]["run"]  # noqa: B018 - the layout check
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"--resume {run_dir}: {CONFIG} is missing or unreadable ({err}); it is needed to "
            "check the checkpoint against the run"
        ) from None
    return payload


def check_resume(payload: dict[str, Any], model: OnPolicyAlgorithm, run_dir: Path) -> None:
    """Refuse a checkpoint whose algorithm, env id or spaces differ from ``config.json``."""
    got = {
        "algo": model.algo,
        "env_id": model.env_id,
        "observation_space": repr(model.observation_space),
        "action_space": repr(model.action_space),
    }
    for key, value in got.items():
        if payload.get(key) != value:
            raise ValueError(
                f"--resume {run_dir}: the checkpoint's {key} is {value!r} but {CONFIG} says "
                f"{payload.get(key)!r}; the checkpoint belongs to another run. Nothing was "
                "changed"
            )


def run_callbacks(
    model: OnPolicyAlgorithm, run: RunConfig, run_dir: Path, *, progress: bool, resume: bool
) -> tuple[list[BaseCallback], InterruptCallback]:
    """The callbacks of a ``natgrad train`` run, and its Ctrl-C handler among them."""
    interrupt = InterruptCallback(
        "Ctrl-C: finishing this iteration, then saving a checkpoint (again to abort)"
    )
    batch = model.config.n_steps * model.rollout_config.n_envs
    callbacks: list[BaseCallback] = [interrupt]
    if progress:
        callbacks.append(
            ProgressBarCallback(description=f"{model.algo} {model.env_source.describe()}")
        )
    callbacks.append(LoggerCallback(run_dir, tensorboard=run.tensorboard, resume=resume))
    if run.eval_every > 0 and run.eval_episodes > 0:
        callbacks.append(
            EvalCallback(
                n_eval_episodes=run.eval_episodes,
                eval_freq=run.eval_every * batch,
                log_path=run_dir,
                best_model_save_path=run_dir,
                verbose=0,
            )  # fmt: skip
        )
    callbacks.append(
        CheckpointCallback(
            run.checkpoint_every * batch,
            run_dir,
            "checkpoint",
            latest_only=True,
            save_on_end=True,
        )  # fmt: skip
    )
    return callbacks, interrupt


def summarise(model: OnPolicyAlgorithm, run: RunConfig, run_dir: Path, *, evaluate: bool) -> str:
    """Draw the learning curve and run the final evaluation (``eval.json``); the report."""
    lines = []
    try:
        lines.append(
            f"learning curve: {plot_learning_curves([run_dir], run_dir / 'learning_curve.png')}"
        )
    except ValueError as exc:  # e.g. no episode has finished yet: nothing to draw
        lines.append(f"no learning curve drawn: {exc}")
    if evaluate and run.eval_episodes > 0:
        returns = model.evaluate(run.eval_episodes)
        summary = {"episodes": len(returns), "mean": float(returns.mean()),
                   "std": float(returns.std()), "returns": returns.tolist(),
                   "env_steps": model.num_timesteps}  # fmt: skip
        write_json(summary, run_dir / "eval.json")
        lines.append(
            f"deterministic evaluation over {len(returns)} episodes: "
            f"{np.mean(returns):.1f} ± {np.std(returns):.1f}"
        )
    lines.append(f"run directory: {run_dir}")
    return "\n".join(lines)


def write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))
