"""How experience is collected: the number of envs, the backend, its workers and threads.

>>> RolloutConfig(n_envs=8, vec="async").vec
'async'
"""

from __future__ import annotations

from dataclasses import dataclass

from natgrad.rl.config.base import ConfigBase, _bad, _choice, _positive_int

__all__ = ["RolloutConfig"]


@dataclass
class RolloutConfig(ConfigBase):
    """The rollout set-up: none of it changes what is learned, only where and how fast."""

    n_envs: int = 1
    """Number of parallel environments."""
    vec: str = "sync"
    """Rollout backend: "sync" (one process), "async" (subprocesses) or "ray" (Ray actors)."""
    workers: int = 0
    """Rollout workers: subprocesses for vec="async", Ray actors for vec="ray"; 0 picks one
    per CPU core (async) or one per env (ray), at most n_envs."""
    ray_address: str = ""
    """Address of a running Ray cluster for vec="ray" ("" starts a local Ray instance)."""
    threads: int = 1
    """torch and numpy-BLAS threads for the rollout and the update (1 is fastest for
    small networks)."""
    critic_worker: bool = False
    """Fit the (default MLP) critic in a helper process, on a second CPU core, while the
    policy step runs, and collect the next batch meanwhile. The results are the same bits
    either way. Off by default: it uses a second core (see README, speed)."""
    env_package: str = ""
    """Modules to import before the env id is looked up, in the learner and every env
    worker: "module" or "module:function" (called), comma-separated; e.g.
    "minatar.gym:register_envs" for the MinAtar ids, "ale_py" for the Atari ones."""
    env_wrapper: str = ""
    """A wrapper applied to every env built from an id or factory: "atari" (gymnasium's
    AtariPreprocessing + a stack of 4 frames) or "module:function" (env -> env)."""
    step_timeout: float | None = 60.0
    """Seconds an env step may take in a subprocess (vec="async") or on a Ray worker before
    the run stops with an error naming the env and the step; None waits forever."""

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "n_envs", "threads")
        if isinstance(self.workers, bool) or not 0 <= self.workers <= self.n_envs:
            _bad("workers", self.workers, f"an int in [0, n_envs={self.n_envs}]: each worker "
                 "needs an env")  # fmt: skip
        _choice(self, "vec", ("sync", "async", "ray"))
        if self.step_timeout is not None and not self.step_timeout > 0:
            _bad("step_timeout", self.step_timeout, "a number of seconds > 0, or None")
