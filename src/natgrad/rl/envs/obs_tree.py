"""Batches of raw observations as the vector envs hold them: one array, or a dict of them.

A ``Dict`` observation space batches as ``{key: (N, *shape)}``; every other space as one
``(N, *shape)`` array. These helpers let the vector envs treat both alike.

>>> import numpy as np
>>> from gymnasium import spaces
>>> buf = obs_buffer(spaces.Dict({"a": spaces.Box(0, 1, (2,)), "b": spaces.Discrete(3)}), 2)
>>> put(buf, 1, {"a": np.ones(2), "b": 2}); take(buf, [1])["b"]
array([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["concat", "copy", "empty_like", "obs_buffer", "put", "readonly", "take", "zeros_like"]


def obs_buffer(space: gym.Space, n: int) -> Any:
    """Zeros for ``n`` observations of ``space``.

    Raises:
        ValueError: For a space without a fixed shape (other than a ``Dict`` of them).
    """
    if isinstance(space, spaces.Dict):
        return {k: obs_buffer(s, n) for k, s in space.spaces.items()}
    if space.shape is None:
        raise ValueError(
            f"unsupported observation space {space!r}: vector envs need a fixed-shape space "
            "(Box, Discrete, or a Dict of them); wrap the env, e.g. with "
            "gymnasium.wrappers.FlattenObservation"
        )
    return np.zeros((n, *space.shape), dtype=space.dtype)


def put(buf: Any, index: Any, value: Any) -> None:
    """``buf[index] = value`` for every key."""
    if isinstance(buf, dict):
        for k, b in buf.items():
            b[index] = value[k]
    else:
        buf[index] = value


def take(buf: Any, index: Any) -> Any:
    """``buf[index]`` for every key."""
    if isinstance(buf, dict):
        return {k: b[index] for k, b in buf.items()}
    return buf[index]


def concat(parts: Sequence[Any]) -> Any:
    """Concatenate batches along the env axis."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def copy(buf: Any) -> Any:
    if isinstance(buf, dict):
        return {k: b.copy() for k, b in buf.items()}
    return buf.copy()


def empty_like(buf: Any) -> Any:
    if isinstance(buf, dict):
        return {k: np.empty_like(b) for k, b in buf.items()}
    return np.empty_like(buf)


def zeros_like(buf: Any) -> Any:
    if isinstance(buf, dict):
        return {k: np.zeros_like(b) for k, b in buf.items()}
    return np.zeros_like(buf)


def readonly(buf: Any) -> Any:
    """Mark the arrays read-only and return ``buf``."""
    for b in buf.values() if isinstance(buf, dict) else [buf]:
        b.flags.writeable = False
    return buf
