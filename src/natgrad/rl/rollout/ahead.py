"""The next batch, collected now or ahead of time: :class:`RolloutQueue`.

TRPO is on-policy, so batch ``k + 1`` needs policy ``k + 1``; but once the policy step
is done, the next batch can be collected while the critic's regression finishes in a
helper process (``critic_worker``). The queue holds that batch until the next
iteration asks for it. A failure while collecting ahead is kept and raised when that
iteration starts (the envs are then in an undefined state, so the state cannot be
saved); the pending batch is part of the state, so a resumed run stays bit-exact.
"""

from __future__ import annotations

import time
from typing import Any

from natgrad.rl.errors import RolloutError
from natgrad.rl.rollout.batch import RolloutBatch
from natgrad.rl.rollout.collector import Collector

__all__ = ["RolloutQueue"]


class RolloutQueue:
    """Batches of ``n_steps`` steps per env from ``collector``, now or ahead of time."""

    def __init__(self, collector: Collector, n_steps: int) -> None:
        self.collector, self.n_steps = collector, n_steps
        self._pending: tuple[RolloutBatch, float] | None = None
        self._error: Exception | None = None

    def next(self, sampler: Any, iteration: int) -> tuple[RolloutBatch, float]:
        """The batch of ``iteration`` and the seconds its collection took."""
        if self._error is not None:  # the batch collected ahead failed
            raise self._error
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        t = time.perf_counter()
        batch = self._collect(sampler, iteration)
        return batch, time.perf_counter() - t

    def collect_ahead(self, sampler: Any, iteration: int) -> float:
        """Collect the batch of ``iteration`` now; returns the seconds it took.

        An error is kept and raised by :meth:`next`; an interrupt is kept the same way
        and propagates at once.
        """
        t = time.perf_counter()
        try:
            self._pending = (self._collect(sampler, iteration), time.perf_counter() - t)
        except Exception as exc:
            self._error = exc
        except BaseException as exc:
            self._error = RolloutError(
                f"iteration {iteration}: collecting its batch ahead was interrupted "
                f"({type(exc).__name__})"
            )
            raise
        return time.perf_counter() - t

    def _collect(self, sampler: Any, iteration: int) -> RolloutBatch:
        try:
            return self.collector.collect(sampler, self.n_steps)
        except RolloutError as exc:  # from a distributed backend: name the iteration
            raise type(exc)(f"iteration {iteration}: {exc}") from exc
        except (FloatingPointError, RuntimeError) as exc:  # a non-finite value; an env that
            # raised, hung or lost its worker (the envs are then in an undefined state)
            raise RolloutError(f"iteration {iteration}: {exc}") from exc

    def state_dict(self) -> dict[str, Any]:
        """The collector's state and the pending batch; refused after a failure."""
        if self._error is not None:
            raise RolloutError(
                f"cannot save: the next batch, collected ahead, failed ({self._error}); "
                "the envs are in an undefined state, so resume from an earlier checkpoint"
            )
        return {"collector": self.collector.state_dict(), "pending_rollout": self._pending}

    def load_state_dict(self, state: dict[str, Any], *, envs: bool = True) -> None:
        """Restore :meth:`state_dict` (with ``envs=False``, only the normalisers)."""
        self._error = None
        if envs:
            self.collector.load_state_dict(state["collector"])
            self._pending = state.get("pending_rollout")
            return
        self._pending = None
        for name in ("obs_normalizer", "reward_scaler"):
            obj, saved = getattr(self.collector, name), state["collector"].get(name)
            if obj is not None and saved is not None:
                obj.load_state_dict(saved)
