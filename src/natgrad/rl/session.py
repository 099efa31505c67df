"""A training run on disk: config, logs, checkpoints, a learning-curve plot and an evaluation.

Layout of a run directory::

    config.json         the full config (and the preset source it started from)
    progress.csv        one row per iteration (also as TensorBoard event files)
    checkpoint.pt       the latest consistent state, written atomically
    learning_curve.png  episode return against env steps
    eval.json           the final deterministic evaluation

Ctrl-C finishes the iteration in progress, writes a checkpoint and exits
cleanly; a second Ctrl-C stops at once, leaving the previous checkpoint.
A run that fails (a NaN from the env, say) writes nothing, so the last good
checkpoint stays intact.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from natgrad.rl.agent import AGENTS, Agent
from natgrad.rl.config import AgentConfig
from natgrad.utils.checkpoint import atomic_write, load_checkpoint
from natgrad.utils.logger import RunLogger
from natgrad.utils.plotting import plot_learning_curves
from natgrad.utils.progress import ProgressBar

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


@dataclass
class RunResult:
    """What a training run ended with."""

    run_dir: Path
    env_steps: int
    interrupted: bool
    eval_returns: np.ndarray | None


class _StopFlag:
    """First SIGINT asks the loop to stop after the current iteration; the second interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this iteration, then saving a checkpoint (again to abort)",
              file=sys.stderr)  # fmt: skip

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def default_run_dir(cfg: AgentConfig, root: Path = Path("runs")) -> Path:
    """``runs/<env>_<algo>_seed<seed>``, with ``_2``, ``_3``... if it is taken."""
    base = root / f"{cfg.env_id}_{cfg.algo}_seed{cfg.seed}"  # type: ignore[attr-defined]
    path, k = base, 2
    while path.exists() and any(path.iterdir()):
        path, k = base.with_name(f"{base.name}_{k}"), k + 1
    return path


def start(cfg: AgentConfig, run_dir: Path, *, preset_source: str = "") -> tuple[Agent, RunLogger]:
    """Create a fresh run in ``run_dir`` (which must not hold a run already)."""
    if (run_dir / CHECKPOINT).exists() or (run_dir / "progress.csv").exists():
        raise ValueError(
            f"--run-dir {run_dir} already holds a run; continue it with "
            f"`natgrad train --resume {run_dir}` or choose another --run-dir"
        )
    agent = AGENTS[cfg.algo](config=cfg)  # type: ignore[attr-defined]
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {"algo": cfg.algo, "env_id": cfg.env_id, "preset_source": preset_source,  # type: ignore[attr-defined]
               "config": cfg.to_dict()}  # fmt: skip
    save_atomic_json(payload, run_dir / CONFIG)
    return agent, RunLogger(run_dir, tensorboard=cfg.tensorboard)


def resume(run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[Agent, RunLogger]:
    """Rebuild the agent from ``run_dir``'s checkpoint; logs after it are dropped."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise ValueError(f"--resume {run_dir}: no {CHECKPOINT} there; is it a natgrad run dir?")
    state = load_checkpoint(path, required=("algo", "config", "policy", "collector"))
    algo = state["algo"]
    if algo not in AGENTS:
        raise ValueError(f"checkpoint {path} names an unknown algo {algo!r}")
    cfg = AGENTS[algo].config_class.from_dict(state["config"])
    if overrides:
        fixed = {"env_id", "n_envs", "seed", "policy_hidden", "critic_hidden", "activation"}
        for key, value in overrides.items():
            if key in fixed and value != getattr(cfg, key):
                raise ValueError(
                    f"--resume: {key} cannot change in a resumed run "
                    f"(checkpoint has {getattr(cfg, key)!r}, asked {value!r})"
                )
        cfg = cfg.replace(**overrides)
    agent = AGENTS[algo](config=cfg)
    try:
        agent.load_state_dict(state)
    except Exception as exc:
        agent.close()
        raise ValueError(
            f"checkpoint {path} does not match its own config ({exc}); nothing was changed"
        ) from None
    logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resume=True)
    logger.truncate_after(agent.env_steps)
    return agent, logger


def train(
    agent: Agent,
    logger: RunLogger,
    run_dir: Path,
    *,
    progress: bool = True,
    evaluate: bool = True,
    out: TextIO | None = None,
) -> RunResult:
    """The training loop with logging, periodic checkpoints, the plot and the evaluation."""
    out = sys.stdout if out is None else out
    cfg = agent.config
    bar = ProgressBar(cfg.total_steps, f"{cfg.algo} {cfg.env_id}", file=out, disable=not progress)  # type: ignore[attr-defined]
    bar.update(min(agent.env_steps, cfg.total_steps))
    ckpt = run_dir / CHECKPOINT
    interrupted = False
    try:
        with _StopFlag() as stop:
            while agent.env_steps < cfg.total_steps:
                before = agent.env_steps
                # Collect the next batch ahead (overlapping the critic's fit) except before
                # a checkpoint, which then never holds a half-collected batch.
                more = agent.env_steps + cfg.batch_steps < cfg.total_steps
                saves = (agent.iteration + 1) % cfg.checkpoint_every == 0
                metrics = agent.train_iteration(prefetch=more and not saves)
                logger.log(agent.env_steps, metrics)
                bar.update(
                    min(agent.env_steps, cfg.total_steps) - min(before, cfg.total_steps),
                    ret=round(metrics["episode_return"], 1),
                    kl=f"{metrics['kl']:.4f}",
                )
                if stop.requested:
                    interrupted = True
                    break
                if agent.iteration % cfg.checkpoint_every == 0:
                    agent.save(ckpt)
        agent.save(ckpt)
    finally:
        bar.close()
        logger.close()
    if interrupted:
        print(f"stopped at {agent.env_steps} steps; checkpoint saved to {ckpt}", file=out)
        print(f"continue with: natgrad train --resume {run_dir}", file=out)
        return RunResult(run_dir, agent.env_steps, True, None)
    try:
        plot = plot_learning_curves([run_dir], run_dir / "learning_curve.png")
        print(f"learning curve: {plot}", file=out)
    except ValueError as exc:  # e.g. no episode has finished yet: nothing to draw
        print(f"no learning curve drawn: {exc}", file=out)
    returns = None
    if evaluate and cfg.eval_episodes > 0:
        returns = agent.evaluate(cfg.eval_episodes)
        summary = {"episodes": len(returns), "mean": float(returns.mean()),
                   "std": float(returns.std()), "returns": returns.tolist()}  # fmt: skip
        save_atomic_json(summary, run_dir / "eval.json")
        print(
            f"deterministic evaluation over {len(returns)} episodes: "
            f"{returns.mean():.1f} ± {returns.std():.1f}",
            file=out,
        )
    print(f"run directory: {run_dir}", file=out)
    return RunResult(run_dir, agent.env_steps, False, returns)


def save_atomic_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2) + "\n"))


__all__ = ["RunResult", "default_run_dir", "resume", "start", "train"]
