"""Distributed rollouts on a Ray cluster: :class:`RayCollector` (guide: docs/distributed.md).

``workers`` Ray actors each run a sync :class:`~natgrad.rl.rollout.LocalCollector` over a
contiguous block of env indices. Per :meth:`~RayCollector.collect` the learner puts the
sampler into the object store once, sends its reference and the frozen normalisation
statistics to every actor, concatenates the returned step batches in env-index order and
updates the statistics once from the whole batch: bit for bit the batch of one
``LocalCollector`` over all the envs. Each actor also returns its ``state_dict()``; the
learner keeps the last one, and a worker that dies, hangs past ``timeout`` or raises from
an env is replaced by an actor restored from it and collects its share again, so the
result does not change. :class:`RayRolloutError` (a worker failing beyond
``max_restarts``) and :class:`RayClusterGone` are :class:`~natgrad.rl.errors.RolloutError`,
which ``natgrad train`` reports without overwriting the last good checkpoint.
:meth:`~RayCollector.state_dict` has the per-env layout of ``LocalCollector.state_dict()``:
checkpoints resume on either backend, with any number of workers.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray import exceptions as rex

from natgrad.rl.envs.make import EnvFactory
from natgrad.rl.errors import RolloutError
from natgrad.rl.rollout.batch import RolloutBatch, concat_batches, update_stats
from natgrad.rl.rollout.normalize import ObsNormalizer, RewardScaler
from natgrad.rl.rollout.ray_worker import (
    PER_ENV_FIELDS,
    RolloutWorker,
    check_args,
    check_capacity,
    check_reachable,
    cpu_count,
    join_states,
    split_state,
)

__all__ = ["RayClusterGone", "RayCollector", "RayRolloutError"]

# Errors that replaying the same steps from the same state would only repeat.
_DETERMINISTIC = (FloatingPointError, ValueError, TypeError, pickle.PicklingError)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayRolloutError(RolloutError):
    """A Ray worker kept failing (env exception, death or hang) beyond ``max_restarts``."""


class RayClusterGone(RayRolloutError):
    """The Ray cluster went away (shut down or unreachable) during a rollout."""


_RemoteWorker = ray.remote(RolloutWorker)


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayCollector:
    """Collects rollouts with Ray actors; same batches as :class:`LocalCollector`.

    Args:
        env_factory: An :class:`~natgrad.rl.envs.EnvFactory`, a gymnasium id, or a
            picklable callable ``(index, seed) -> env``. Every class of the env must be
            importable on the workers (not defined in ``__main__``): env states are
            pickled by reference.
        n_envs: Total number of envs.
        seed: Base seed (see :mod:`natgrad.rl.rollout`).
        workers: Number of actors (default ``n_envs``); env indices are split into
            contiguous blocks whose sizes differ by at most one.
        address: ``None`` starts a local Ray instance (shut down by :meth:`close`);
            otherwise the address of a running cluster (``"auto"``, ``"host:6379"``,
            ``"ray://host:10001"``). If Ray is already initialised in this process, that
            connection is used and left alone.
        normalize_obs, normalize_reward, clip_obs, gamma: As for :class:`LocalCollector`.
        worker_cpus: CPUs each actor asks Ray for. The default, a small fraction, lets
            many latency-bound workers share a core; use ``1`` for CPU-bound envs on a
            multi-node cluster so that Ray reserves a core per worker.
        timeout: Seconds a worker may take for one call (start-up included) before it is
            considered hung, killed and replaced.
        step_timeout: Seconds one env may spend in one ``step()`` before the rollout fails
            with :class:`RayRolloutError` naming the env and the step (a replay would hang
            again, so there is no restart); ``None``: no such limit.
        max_restarts: Replacements of one worker within one call before giving up.
        init_kwargs: Extra keyword arguments for ``ray.init``.

    Attributes:
        restarts: Number of worker replacements so far.
        address: The cluster's GCS address.
    """

    heartbeat = 10.0  # seconds without news after which the cluster is probed
    probe_timeout = 10.0  # seconds the probe may take before the cluster is declared gone

    def __init__(
        self,
        env_factory: EnvFactory | str | Callable[[int, int], gym.Env],
        n_envs: int,
        seed: int,
        *,
        workers: int | None = None,
        address: str | None = None,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        clip_obs: float = 10.0,
        gamma: float = 0.99,
        worker_cpus: float = 0.01,
        timeout: float = 600.0,
        step_timeout: float | None = None,
        max_restarts: int = 3,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        workers = check_args(n_envs, seed, workers, worker_cpus, timeout, max_restarts)
        if isinstance(env_factory, str):
            env_factory = EnvFactory(env_factory)
        if not callable(env_factory):
            raise ValueError(f"env_factory={env_factory!r} must be an EnvFactory, id or callable")
        self.n_envs, self.seed, self.gamma = n_envs, int(seed), gamma
        self.worker_cpus, self.timeout, self.max_restarts = worker_cpus, timeout, max_restarts
        if step_timeout is not None and not step_timeout > 0:
            raise ValueError(f"step_timeout={step_timeout!r} must be > 0 seconds, or None")
        self.step_timeout = step_timeout
        self.restarts = 0
        self._factory = env_factory
        self._options = dict(
            normalize_obs=normalize_obs, normalize_reward=normalize_reward, clip_obs=clip_obs,
            gamma=gamma,
        )  # fmt: skip
        bounds = np.linspace(0, n_envs, workers + 1).round().astype(int).tolist()
        self._blocks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self._states: list[dict[str, Any] | None] = [None] * workers
        self._actors: list[Any] = []
        self._resync = False
        self._closed = self._lost = False
        self._owns_ray = False
        self._connect(address, init_kwargs)
        try:
            check_capacity(workers, worker_cpus, ray.cluster_resources())
            self._actors = [self._spawn(k) for k in range(workers)]
            infos = self._run(lambda k: self._actors[k].describe.remote())
        except BaseException:
            self.close()
            raise
        self.worker_pids = [int(info["pid"]) for info in infos]
        self._states = [info["state"] for info in infos]
        self.observation_space = infos[0]["observation_space"]
        self.action_space = infos[0]["action_space"]
        self.obs_dim = int(infos[0]["obs_dim"])
        self.obs_normalizer = (
            ObsNormalizer((self.obs_dim,), clip=clip_obs) if normalize_obs else None
        )
        self.reward_scaler = RewardScaler(gamma) if normalize_reward else None

    # --- cluster --------------------------------------------------------------------
    def _connect(self, address: str | None, init_kwargs: dict[str, Any] | None) -> None:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(
                include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                logging_level=logging.WARNING,
            )  # fmt: skip
            if address is None:
                kwargs.update(address="local", num_cpus=cpu_count())
            else:
                check_reachable(address)
                kwargs["address"] = address
            kwargs.update(init_kwargs or {})
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ValueError(
                    f"address={address!r}: cannot connect to a Ray cluster ({exc}); start one "
                    "with `ray start --head` and pass its address ('auto' on a cluster node), "
                    "or leave the address empty for a local Ray instance"
                ) from None
            self._owns_ray = True
        self.address = str(ray.get_runtime_context().gcs_address)

    def _cluster_alive(self) -> bool:
        if not ray.is_initialized():
            return False
        answer: list[bool] = []

        def probe() -> None:
            try:
                answer.append(any(node.get("Alive") for node in ray.nodes()))
            except Exception:
                answer.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(self.probe_timeout)
        return bool(answer and answer[0])

    def _gone(self, why: str) -> RayClusterGone:
        self._lost = True
        return RayClusterGone(
            f"the Ray cluster at {self.address} is gone ({why}); the rollout was abandoned. "
            "Restart the cluster and resume the run from its last checkpoint "
            "(natgrad train --resume RUN_DIR)"
        )

    def _require_cluster(self, exc: BaseException | None = None) -> None:
        if not self._cluster_alive():
            why = (
                "Ray was shut down in this process"
                if not ray.is_initialized()
                else f"it did not answer a status request within {self.probe_timeout:g} s"
            )
            raise self._gone(why if exc is None else f"{why}; {_first_line(exc)}") from exc

    # --- workers --------------------------------------------------------------------
    def _spawn(self, k: int) -> Any:
        a, b = self._blocks[k]
        return _RemoteWorker.options(  # type: ignore[attr-defined]
            num_cpus=self.worker_cpus, max_restarts=0, max_task_retries=0,
            max_concurrency=2,  # a collect and the watchdog's progress() at once
            scheduling_strategy="SPREAD",
        ).remote(self._factory, list(range(a, b)), self.seed, self._options, self._states[k])  # fmt: skip

    def _replace(self, k: int) -> None:
        try:
            ray.kill(self._actors[k], no_restart=True)
        except Exception:
            pass
        self._actors[k] = self._spawn(k)
        self.restarts += 1

    def _envs(self, k: int) -> str:
        a, b = self._blocks[k]
        return f"env {a}" if b - a == 1 else f"envs {a}..{b - 1}"

    def _run(self, submit: Callable[[int], Any]) -> list[Any]:
        """``submit(k)`` on every worker; replace and resubmit failed ones; the results."""
        results: dict[int, Any] = {}
        failures = [0] * len(self._actors)
        pending: dict[Any, tuple[int, float]] = {}

        def start(k: int) -> None:
            try:
                ref = submit(k)
            except (rex.RayError, ConnectionError) as exc:
                self._require_cluster(exc)
                raise
            pending[ref] = (k, time.monotonic() + self.timeout)

        def failed(k: int, message: str) -> None:  # message: of attempt failures[k] + 1
            failures[k] += 1
            if failures[k] > self.max_restarts:
                raise RayRolloutError(message)
            self._replace(k)
            start(k)

        for k in range(len(self._actors)):
            start(k)
        while pending:
            wait = min(self.heartbeat, min(d for _, d in pending.values()) - time.monotonic())
            if self.step_timeout is not None:
                wait = min(wait, max(self.step_timeout / 4, 0.05))
            try:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(wait, 0.0))
            except (rex.RayError, ConnectionError) as exc:
                self._require_cluster(exc)
                raise
            if not ready:
                self._require_cluster()
                self._check_steps([k for k, _ in pending.values()])
                now = time.monotonic()
                for ref in [r for r, (_, d) in pending.items() if d <= now]:
                    k, _ = pending.pop(ref)
                    failed(
                        k,
                        f"Ray worker {k} ({self._envs(k)}) did not answer within timeout="
                        f"{self.timeout:g} s, {failures[k] + 1} times in a row; raise timeout "
                        "if its rollouts are that slow, or check that the cluster has room for "
                        f"the workers (each asks for worker_cpus={self.worker_cpus:g} CPUs)",
                    )
                continue
            k, _ = pending.pop(ready[0])
            try:
                results[k] = ray.get(ready[0])
            except rex.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                if isinstance(cause, _DETERMINISTIC):
                    raise cause from None
                m = re.search(r"env (\d+) raised", str(cause))
                who = f"env {m.group(1)}" if m else self._envs(k)
                failed(
                    k,
                    f"{who} failed {failures[k] + 1} times in a row on Ray worker {k}, "
                    "restored from its last good state each time; last error: "
                    f"{_first_line(cause)}. Fix the env, or raise max_restarts if its "
                    "failures are transient",
                )
            except (rex.RayActorError, rex.WorkerCrashedError, rex.ObjectLostError) as exc:
                self._require_cluster(exc)
                failed(
                    k,
                    f"Ray worker {k} ({self._envs(k)}) died {failures[k] + 1} times in a row "
                    f"({_first_line(exc)}); see the worker logs (`ray logs`, "
                    "/tmp/ray/session_latest/logs): an out-of-memory kill or an env that "
                    "crashes its process are the usual causes",
                )
            except (rex.RayError, ConnectionError) as exc:
                self._require_cluster(exc)
                raise
        return [results[k] for k in range(len(self._actors))]

    def _check_steps(self, workers: list[int]) -> None:
        """Raise :class:`RayRolloutError` if an env of ``workers`` is stuck in ``step()``."""
        if self.step_timeout is None:
            return
        refs = {k: self._actors[k].progress.remote() for k in workers}
        for k, ref in refs.items():
            try:
                stuck = ray.get(ref, timeout=self.probe_timeout)
            except (rex.GetTimeoutError, rex.RayError):
                continue  # a dead or unreachable worker is the other checks' business
            if stuck is not None and stuck[1] > self.step_timeout:
                env, seconds, t = stuck
                self._replace(k)  # its thread is stuck in the env: stop it
                self.restarts -= 1  # not a restart to retry: the replay would hang too
                raise RayRolloutError(
                    f"env {env} did not return from step() within step_timeout="
                    f"{self.step_timeout:g} s (at step {t} of the rollout, on Ray worker {k}); "
                    "the run stops (fix the env, or raise step_timeout if its steps are that "
                    "slow)"
                )

    # --- Collector protocol ---------------------------------------------------------
    def collect(self, sampler: Any, n_steps: int) -> RolloutBatch:
        """Run ``n_steps`` steps of every env on the workers and return the whole batch.

        Raises:
            FloatingPointError: A non-finite observation or reward (naming env and step).
            RayRolloutError: A worker still failed after ``max_restarts`` replacements.
            RayClusterGone: The cluster is gone.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r} must be a positive int")
        if self._closed:
            raise ValueError("this RayCollector is closed; build a new one")
        self._require_cluster()
        try:
            if self._resync:
                self._push_states()
            try:
                ref = ray.put(sampler)
            except (rex.RayError, ConnectionError) as exc:
                self._require_cluster(exc)
                raise
            stats = (
                None if self.obs_normalizer is None else self.obs_normalizer.state_dict(),
                None if self.reward_scaler is None else self.reward_scaler.state_dict(),
            )
            out = self._run(lambda k: self._actors[k].collect.remote(ref, n_steps, stats))
        except BaseException:
            self._resync = True  # some actors may have advanced past the kept states
            raise
        self._states = [state for _, state in out]
        batch = concat_batches([b for b, _ in out])
        self.update_stats(batch)
        return batch

    def _push_states(self) -> None:
        self._run(lambda k: self._actors[k].load_state_dict.remote(self._states[k]))
        self._resync = False

    def update_stats(self, batch: RolloutBatch) -> None:
        """Update the learner's statistics from a whole batch (done by :meth:`collect`)."""
        update_stats(self.obs_normalizer, self.reward_scaler, batch)

    def state_dict(self) -> dict[str, Any]:
        """The state after the last successful collect, in ``LocalCollector``'s layout."""
        parts = [s for s in self._states if s is not None]
        return join_states(parts, self.obs_normalizer, self.reward_scaler)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state of this class or of a ``LocalCollector`` over the same envs."""
        if list(state["env_indices"]) != list(range(self.n_envs)):
            raise ValueError(
                f"state is for env indices {list(state['env_indices'])}, this collector runs "
                f"0..{self.n_envs - 1}; build it with n_envs={len(state['env_indices'])}"
            )
        for name in PER_ENV_FIELDS:
            if len(state[name]) != self.n_envs:
                raise ValueError(
                    f"state {name} has {len(state[name])} entries for {self.n_envs} envs"
                )
        norms = (("obs_normalizer", self.obs_normalizer), ("reward_scaler", self.reward_scaler))
        for name, obj in norms:
            if (state[name] is None) != (obj is None):
                raise ValueError(f"state {name} presence does not match this collector's settings")
        for name, obj in norms:
            if obj is not None:
                obj.load_state_dict(state[name])
        self._states = [split_state(state, a, b) for a, b in self._blocks]
        self._require_cluster()
        try:
            self._push_states()
        except BaseException:
            self._resync = True
            raise

    def close(self) -> None:
        """Stop the actors (and the local Ray instance this collector started)."""
        if self._closed:
            return
        self._closed = True
        if not ray.is_initialized():
            return
        for actor in [] if self._lost else self._actors:  # (killing needs the cluster)
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if self._owns_ray:
            ray.shutdown()

    @property
    def actors(self) -> list[Any]:
        """The current actor handles, one per worker (for monitoring and fault tests)."""
        return list(self._actors)

    @property
    def workers(self) -> int:
        """Number of workers."""
        return len(self._blocks)

    def __enter__(self) -> RayCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
