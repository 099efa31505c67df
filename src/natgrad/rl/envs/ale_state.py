"""Checkpointing ALE (Atari) envs mid-episode.

An ALE env holds an ``ALEInterface``, which does not pickle. For :func:`~natgrad.rl.envs.make.dump_env`
it is replaced by the emulator's own snapshot, ``ale.cloneState(include_rng=True)``; on
load the env is rebuilt from its constructor arguments (loading the ROM) and the
snapshot restored, so the episode continues where it was.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ale_reducer"]


def _rebuild(cls: type, args: tuple, kwargs: dict, state: dict[str, Any], snapshot: Any) -> Any:
    obj = cls(*args, **kwargs)
    ale = obj.ale
    obj.__dict__.update(state)
    obj.ale = ale
    ale.restoreState(snapshot)
    return obj


def ale_reducer(obj: Any) -> tuple | None:
    """A pickle reduction for an ALE env (one with an ``ale`` emulator), else ``None``."""
    ale = getattr(obj, "__dict__", {}).get("ale")
    if ale is None or type(ale).__name__ != "ALEInterface":
        return None
    state = {k: v for k, v in obj.__dict__.items() if k != "ale"}
    args = tuple(getattr(obj, "_ezpickle_args", ()))
    kwargs = dict(getattr(obj, "_ezpickle_kwargs", {}))
    return _rebuild, (type(obj), args, kwargs, state, ale.cloneState(include_rng=True))
