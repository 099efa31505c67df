"""Env factories that add latency or inject faults, to exercise distributed rollouts.

They live in an importable module (not in a test file or a script) because the Ray
workers pickle env states with the standard pickler, which stores classes by reference:
every class of an env must be importable on the workers.

* :class:`LatencyWrapper` sleeps a fixed time per step: a stand-in for a remote
  simulator, whose throughput is bounded by latency rather than CPU.
* :class:`FaultWrapper` makes env ``env_index`` raise, or kill its own process, at its
  ``step``-th step. With a ``marker`` path the fault fires only ``times`` times in all
  (each firing claims a token file ``<marker>.<k>``, atomically, across processes), so
  a restarted worker that replays the same steps gets past it.
* :class:`InjectedEnvFactory` builds env ``i`` from a gymnasium id and applies both;
  it is a picklable ``(index, seed) -> env`` callable for any collector.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from natgrad.rl.envs import EnvFactory

__all__ = ["FaultWrapper", "InjectedEnvFactory", "LatencyWrapper"]


class LatencyWrapper(gym.Wrapper):
    """Sleeps ``latency`` seconds in every ``step`` (and ``reset``)."""

    def __init__(self, env: gym.Env, latency: float) -> None:
        super().__init__(env)
        if not latency >= 0:
            raise ValueError(f"latency={latency!r} must be a number of seconds >= 0")
        self.latency = float(latency)

    def step(self, action: Any) -> Any:
        time.sleep(self.latency)
        return self.env.step(action)

    def reset(self, **kwargs: Any) -> Any:
        time.sleep(self.latency)
        return self.env.reset(**kwargs)


class FaultWrapper(gym.Wrapper):
    """Raises ``RuntimeError`` or SIGKILLs its own process at its ``step``-th step.

    The step counter counts every ``step`` call since construction and travels with the
    env state, so a worker restored from a state taken before the fault reaches it again.

    Args:
        env: The env to wrap.
        step: 1-based step at which the fault fires.
        kind: ``"raise"`` or ``"kill"`` (never use ``"kill"`` in the learner process).
        marker: Path prefix of the token files limiting the number of firings; ``None``
            fires every time the step is reached (a persistent fault).
        times: Number of firings allowed by the tokens.
    """

    def __init__(
        self,
        env: gym.Env,
        step: int,
        kind: str = "raise",
        marker: str | None = None,
        times: int = 1,
    ) -> None:
        super().__init__(env)
        if kind not in ("raise", "kill"):
            raise ValueError(f"kind={kind!r}; use 'raise' or 'kill'")
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step={step!r} must be an int >= 1")
        self.fault_step, self.kind, self.marker, self.times = step, kind, marker, times
        self.steps = 0

    def _claim(self) -> bool:
        if self.marker is None:
            return True
        for k in range(self.times):
            try:
                os.close(os.open(f"{self.marker}.{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return True
            except FileExistsError:
                continue
        return False

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.fault_step and self._claim():
            if self.kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault at step {self.steps}")
        return self.env.step(action)


@dataclass(frozen=True)
class InjectedEnvFactory:
    """Picklable ``(index, seed) -> env``: ``env_id`` plus latency and an optional fault.

    Attributes:
        env_id: Gymnasium id of the base env.
        latency: Seconds slept per step (``0``: none).
        fault_env: Global index of the env that faults (``None``: no fault).
        fault_step: Step of that env at which it faults.
        fault_kind: ``"raise"`` or ``"kill"``.
        marker: Token-file prefix (see :class:`FaultWrapper`); ``None``: fault every time.
        times: Number of firings allowed with a ``marker``.
    """

    env_id: str
    latency: float = 0.0
    fault_env: int | None = None
    fault_step: int = 1
    fault_kind: str = "raise"
    marker: str | None = None
    times: int = 1

    def __call__(self, index: int = 0, seed: int | None = None) -> gym.Env:
        env = EnvFactory(self.env_id)(index, seed)
        if self.latency > 0:
            env = LatencyWrapper(env, self.latency)
        if self.fault_env is not None and index == self.fault_env:
            env = FaultWrapper(env, self.fault_step, self.fault_kind, self.marker, self.times)
        return env
