"""What the rollout layer accepts from an env's spaces, and the conversions at the boundary.

* :func:`check_spaces` refuses spaces the policies cannot take, saying how to wrap them;
* :class:`ObsEncoder` turns a batch of raw observations into the flat float vectors
  the policy sees (``Box`` flattened, ``Discrete`` one-hot);
* :func:`kind_for_space` picks the action distribution of an action space;
* :func:`action_to_env` maps sampled actions back to what ``env.step`` takes.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ObsEncoder", "action_to_env", "check_spaces", "kind_for_space"]


def check_spaces(obs_space: gym.Space, act_space: gym.Space) -> None:
    """Check that the rollout layer supports an environment's spaces.

    Args:
        obs_space: The single-env observation space.
        act_space: The single-env action space.

    Raises:
        ValueError: Naming the unsupported space and listing the supported ones.
    """
    if not isinstance(obs_space, (spaces.Box, spaces.Discrete)):
        raise ValueError(
            f"unsupported observation space {obs_space!r}; supported: Box (flattened) and "
            "Discrete (one-hot). Wrap the env, e.g. with gymnasium.wrappers.FlattenObservation"
        )
    if isinstance(act_space, spaces.MultiDiscrete) and act_space.nvec.ndim != 1:
        raise ValueError(
            f"unsupported action space {act_space!r}: MultiDiscrete nvec must be 1-D, "
            f"got shape {act_space.nvec.shape}; flatten the action space"
        )
    if isinstance(act_space, spaces.MultiBinary) and len(act_space.shape) != 1:
        raise ValueError(
            f"unsupported action space {act_space!r}: MultiBinary must be 1-D, "
            f"got shape {act_space.shape}; flatten the action space"
        )
    if not isinstance(
        act_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    ):
        raise ValueError(
            f"unsupported action space {act_space!r}; supported: Box, Discrete, "
            "MultiDiscrete, MultiBinary"
        )


def kind_for_space(space: spaces.Space) -> tuple[str, int, list[int] | None]:
    """Return ``(kind, out_dim, nvec)`` for a gymnasium action space.

    Args:
        space: A ``Box``, ``Discrete``, ``MultiDiscrete`` or ``MultiBinary`` space.

    Returns:
        The distribution kind, the actor output size and ``nvec`` (or ``None``).
    """
    if isinstance(space, spaces.Box):
        return "gaussian", int(np.prod(space.shape)), None
    if isinstance(space, spaces.Discrete):
        return "categorical", int(space.n), None
    if isinstance(space, spaces.MultiDiscrete):
        nvec = [int(n) for n in space.nvec.reshape(-1)]
        return "multicategorical", sum(nvec), nvec
    if isinstance(space, spaces.MultiBinary):
        return "bernoulli", int(np.prod(space.shape)), None
    raise ValueError(f"unsupported action space {space!r}")


class ObsEncoder:
    """Turns a batch of raw observations into a ``(N, dim)`` numeric array.

    ``Box`` observations are flattened (a view when possible, keeping the env dtype);
    ``Discrete`` ones are one-hot encoded as float32.

    Args:
        space: The single-env observation space.
    """

    def __init__(self, space: gym.Space) -> None:
        if isinstance(space, spaces.Discrete):
            self.dim = int(space.n)
            self._start = int(space.start)
            self._one_hot = True
        elif isinstance(space, spaces.Box):
            self.dim = int(np.prod(space.shape, dtype=np.int64))
            self._one_hot = False
        else:
            raise ValueError(f"unsupported observation space {space!r}; use Box or Discrete")
        self.space = space

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Encode a batch ``raw`` of shape ``(N, *space.shape)``."""
        n = raw.shape[0]
        if self._one_hot:
            out = np.zeros((n, self.dim), dtype=np.float32)
            out[np.arange(n), np.asarray(raw, dtype=np.int64) - self._start] = 1.0
            return out
        return raw.reshape(n, self.dim)


def action_to_env(space: gym.Space) -> Callable[[np.ndarray], np.ndarray]:
    """Return a function mapping sampled actions ``(N, *act_shape)`` to env actions.

    ``Box`` actions are clipped to the bounds (only here, never in the stored batch) and
    reshaped to the space shape; ``Discrete``/``MultiDiscrete`` actions get the space's
    ``start`` offset added; ``MultiBinary`` actions are cast to the space dtype.

    Args:
        space: The single-env action space.

    Returns:
        The conversion function.
    """
    if isinstance(space, spaces.Box):
        low = space.low.reshape(-1).astype(np.float32)
        high = space.high.reshape(-1).astype(np.float32)
        shape, dtype = space.shape, space.dtype
        if not (np.isfinite(low).any() or np.isfinite(high).any()):
            return lambda a: a.astype(dtype, copy=False).reshape(a.shape[0], *shape)
        maximum, minimum = np.maximum, np.minimum

        def clip(a: np.ndarray) -> np.ndarray:
            # maximum/minimum ufuncs: the same result as np.clip at a third of its overhead.
            out = maximum(a, low)
            minimum(out, high, out=out)
            return out.astype(dtype, copy=False).reshape(a.shape[0], *shape)

        return clip
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        start = np.asarray(space.start, dtype=np.int64)
        if not start.any():
            return lambda a: a
        return lambda a: a + start
    if isinstance(space, spaces.MultiBinary):
        dtype = space.dtype
        return lambda a: a.astype(dtype)
    raise ValueError(f"unsupported action space {space!r}")
