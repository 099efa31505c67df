"""Helpers of :mod:`natgrad.rl.rollout.ray` that need no Ray: the worker (the actor's
class), cutting and joining collector states, argument and connection checks.

A collector state (``LocalCollector.state_dict()``) is per env: lists and arrays indexed
by column, plus the normaliser states. :func:`split_state` cuts the state of envs
``a..b-1`` out of a whole-collector state and :func:`join_states` glues block states
back together, so the learner can hold one state per worker and still save (and load)
the layout of a ``LocalCollector`` over all the envs.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np

from natgrad.rl.envs.vec import StepWatch
from natgrad.rl.rollout.collector import LocalCollector

__all__ = [
    "PER_ENV_FIELDS",
    "RolloutWorker",
    "check_args",
    "check_capacity",
    "check_reachable",
    "cpu_count",
    "join_states",
    "split_state",
]

PER_ENV_LISTS = ("envs", "rng")
PER_ENV_ARRAYS = ("obs", "ep_return", "ep_length", "discounted_return")
PER_ENV_FIELDS = PER_ENV_LISTS + PER_ENV_ARRAYS


class RolloutWorker:
    """What runs inside a Ray actor: a sync ``LocalCollector`` over env indices ``env_indices``.

    A construction error is kept and raised by every call, so that the learner sees the
    original exception rather than an opaque "actor died in its creation task".

    Args:
        env_factory: As for ``LocalCollector``.
        env_indices: The global indices of this worker's envs.
        seed: Base seed.
        options: ``normalize_obs``, ``normalize_reward`` and ``gamma``.
        state: A block state (from :func:`split_state` or a previous worker) to restore.
    """

    def __init__(
        self,
        env_factory: Any,
        env_indices: list[int],
        seed: int,
        options: dict[str, Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        self._error: BaseException | None = None
        self.watch = StepWatch()
        try:
            self.collector = LocalCollector(
                env_factory, len(env_indices), seed, vec="sync", env_indices=env_indices,
                auto_update_stats=False, step_watch=self.watch, **options,
            )  # fmt: skip
            if state is not None:
                self.collector.load_state_dict(state)
        except Exception as exc:
            self._error = exc

    def _check(self) -> LocalCollector:
        if self._error is not None:
            raise self._error
        return self.collector

    def describe(self) -> dict[str, Any]:
        """Process id, spaces, observation size and the current state."""
        c = self._check()
        return {
            "pid": os.getpid(),
            "observation_space": c.observation_space,
            "action_space": c.action_space,
            "obs_dim": c.obs_dim,
            "state": c.state_dict(),
        }

    def collect(self, sampler: Any, n_steps: int, stats: tuple[Any, Any]) -> tuple[Any, Any]:
        """Load the learner's ``(obs_normalizer, reward_scaler)`` states, collect, and
        return the batch with the state after it."""
        c = self._check()
        for obj, st in zip((c.obs_normalizer, c.reward_scaler), stats, strict=True):
            if obj is not None:
                obj.load_state_dict(st)
        batch = c.collect(sampler, n_steps)
        return batch, c.state_dict()

    def progress(self) -> tuple[int, float, int] | None:
        """``(env, seconds inside its step(), rollout step)`` while an env steps, else
        ``None``: the learner's watchdog asks it (the actor runs two threads)."""
        return self.watch.stuck()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a block state."""
        self._check().load_state_dict(state)

    def close(self) -> None:
        """Close the envs."""
        if self._error is None:
            self.collector.close()


def split_state(state: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    """The state of envs ``a..b-1`` (columns of ``state``) as a block state."""
    out: dict[str, Any] = {"env_indices": list(range(a, b)), "seed": state["seed"]}
    for name in PER_ENV_LISTS:
        out[name] = list(state[name][a:b])
    for name in PER_ENV_ARRAYS:
        out[name] = np.asarray(state[name])[a:b].copy()
    out["obs_normalizer"] = state["obs_normalizer"]
    out["reward_scaler"] = state["reward_scaler"]
    return out


def join_states(
    parts: Sequence[dict[str, Any]], obs_normalizer: Any, reward_scaler: Any
) -> dict[str, Any]:
    """Glue consecutive block states; the normalisers' states come from the arguments."""
    out: dict[str, Any] = {
        "env_indices": [i for s in parts for i in s["env_indices"]],
        "seed": parts[0]["seed"],
    }
    for name in PER_ENV_LISTS:
        out[name] = [x for s in parts for x in s[name]]
    for name in PER_ENV_ARRAYS:
        out[name] = np.concatenate([np.asarray(s[name]) for s in parts])
    out["obs_normalizer"] = None if obs_normalizer is None else obs_normalizer.state_dict()
    out["reward_scaler"] = None if reward_scaler is None else reward_scaler.state_dict()
    return out


def check_args(
    n_envs: Any, seed: Any, workers: Any, worker_cpus: Any, timeout: Any, max_restarts: Any
) -> int:
    """Validate ``RayCollector``'s arguments; return the number of workers.

    Raises:
        ValueError: Naming the first bad argument, its value and what it must be.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs={n_envs!r} must be a positive int")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0 (needed for reproducibility)")
    workers = n_envs if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= n_envs:
        raise ValueError(
            f"workers={workers!r} must be an int in [1, n_envs={n_envs}]: each worker needs "
            "at least one env"
        )
    if (
        isinstance(worker_cpus, bool)
        or not isinstance(worker_cpus, (int, float))
        or not worker_cpus > 0
    ):
        raise ValueError(f"worker_cpus={worker_cpus!r} must be a number > 0 (e.g. 0.01 or 1)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts={max_restarts!r} must be an int >= 0")
    return int(workers)


def check_capacity(workers: int, worker_cpus: float, resources: dict[str, float]) -> None:
    """Refuse a request for more CPUs than the cluster has (the actors would never start).

    Raises:
        ValueError: Naming ``workers``, ``worker_cpus`` and the cluster's CPUs.
    """
    have = float(resources.get("CPU", 0.0))
    if workers * worker_cpus > have + 1e-9:
        raise ValueError(
            f"workers={workers} x worker_cpus={worker_cpus:g} asks for "
            f"{workers * worker_cpus:g} CPUs but the Ray cluster has {have:g}; lower "
            "worker_cpus (a fraction lets workers share a core) or workers, or add nodes"
        )


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens at (``ray.init`` would retry for minutes).

    Raises:
        ValueError: Naming the address and how to start a cluster there.
    """
    m = re.fullmatch(r"(?:ray://)?\[?([^\]\s]+?)\]?:(\d+)", address.strip())
    if m is None:  # "auto", "local" or a form Ray checks itself
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(
            f"address={address!r}: nothing answers there ({exc}); start the head node with "
            "`ray start --head --port=6379` and pass its host:port, or leave the address "
            "empty for a local Ray instance"
        ) from None
