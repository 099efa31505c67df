"""Environment construction and space checks for the rollout layer.

The rollout layer supports these gymnasium spaces:

* observations: ``Box`` (flattened to a vector) and ``Discrete`` (one-hot encoded);
* actions: ``Box`` (Gaussian policy), ``Discrete`` (categorical), ``MultiDiscrete``
  (one categorical per sub-action) and ``MultiBinary`` (independent Bernoullis).

Environments are built by a picklable :class:`EnvFactory` so that subprocess (and,
later, Ray) workers can construct them from the same description.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import io
import pickle
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils.ezpickle import EzPickle

__all__ = [
    "EnvFactory",
    "ObsEncoder",
    "action_to_env",
    "check_env_id",
    "check_spaces",
    "dump_env",
    "load_env",
    "make_env",
]

Wrapper = Callable[[gym.Env], gym.Env]


def check_env_id(env_id: str) -> None:
    """Check that ``env_id`` is registered with gymnasium.

    ``"module:EnvName-v0"`` ids are supported: the module is imported first, as
    :func:`gymnasium.make` does. An id without a version resolves to its latest
    version.

    Args:
        env_id: A gymnasium environment id, e.g. ``"CartPole-v1"``.

    Raises:
        ValueError: If the id is unknown; the message lists close matches.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id must be a non-empty string, got {env_id!r}")
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"env_id {env_id!r}: cannot import module {module!r} ({err}); "
                "fix the module path or register the env before use"
            ) from err
    registry = gym.envs.registration.registry
    if name in registry:
        return
    ns, base, version = gym.envs.registration.parse_env_id(name)
    if version is None and gym.envs.registration.find_highest_version(ns, base) is not None:
        return
    matches = difflib.get_close_matches(name, list(registry.keys()), n=3, cutoff=0.6)
    if matches:
        hint = "did you mean " + " or ".join(repr(m) for m in matches) + "?"
    else:
        hint = "see gymnasium.pprint_registry() for the registered ids"
    raise ValueError(f"unknown env id {env_id!r}; {hint}")


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


def make_env(
    env_id: str | Callable[..., gym.Env],
    *,
    seed: int | None,
    index: int,
    wrappers: Sequence[Wrapper] | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Build one environment.

    The env is *not* reset here; the vector env resets it with seed ``seed + index``.
    Its action and observation spaces are seeded with ``seed + index`` so that user code
    sampling from them is reproducible too.

    Args:
        env_id: A registered gymnasium id, or a callable returning an env.
        seed: Base seed, or ``None`` for no seeding.
        index: Global index of this env in the (possibly distributed) vector of envs.
        wrappers: Callables ``env -> env`` applied in order.
        **kwargs: Passed to :func:`gymnasium.make` (or to the callable).

    Returns:
        The environment.
    """
    if isinstance(env_id, str):
        check_env_id(env_id)
        env = gym.make(env_id, **kwargs)
    elif callable(env_id):
        env = env_id(**kwargs)
    else:
        raise ValueError(
            f"env_id must be a gymnasium id or a callable returning an env, got {env_id!r}"
        )
    for wrap in wrappers or ():
        env = wrap(env)
    if seed is not None:
        env.action_space.seed(seed + index)
        env.observation_space.seed(seed + index)
    return env


@dataclass(frozen=True)
class EnvFactory:
    """Picklable description of an environment, used by every vector-env backend.

    Attributes:
        env_id: Registered gymnasium id (``"module:Name-v0"`` allowed) or a picklable
            callable (e.g. a top-level class) returning an env.
        kwargs: Keyword arguments for :func:`gymnasium.make` / the callable.
        wrappers: Picklable callables ``env -> env`` applied in order.
    """

    env_id: str | Callable[..., gym.Env]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrappers: tuple[Wrapper, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.env_id, str):
            check_env_id(self.env_id)
        elif not callable(self.env_id):
            raise ValueError(
                f"env_id must be a gymnasium id or a callable returning an env, got {self.env_id!r}"
            )
        object.__setattr__(self, "wrappers", tuple(self.wrappers))

    def __call__(self, index: int = 0, seed: int | None = None) -> gym.Env:
        """Build the env with global index ``index`` (see :func:`make_env`)."""
        return make_env(
            self.env_id, seed=seed, index=index, wrappers=self.wrappers, **dict(self.kwargs)
        )

    def bind(self, index: int, seed: int | None) -> Callable[[], gym.Env]:
        """Return a picklable zero-argument constructor for env ``index``."""
        return functools.partial(self, index, seed)


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
        return lambda a: np.clip(a, low, high).astype(dtype, copy=False).reshape(a.shape[0], *shape)
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        start = np.asarray(space.start, dtype=np.int64)
        if not start.any():
            return lambda a: a
        return lambda a: a + start
    if isinstance(space, spaces.MultiBinary):
        dtype = space.dtype
        return lambda a: a.astype(dtype)
    raise ValueError(f"unsupported action space {space!r}")


def _rebuild_object(cls: type, state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


class _StatePickler(pickle.Pickler):
    # gymnasium's EzPickle (used by the MuJoCo envs) pickles constructor arguments only,
    # so a plain pickle restores a *fresh* env. Pickle its __dict__ instead to keep the
    # full simulator state (MjData pickles in mujoco >= 3).
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, EzPickle) and type(obj).__getstate__ is EzPickle.__getstate__:
            return _rebuild_object, (type(obj), obj.__dict__)
        return NotImplemented


def dump_env(env: gym.Env) -> bytes:
    """Serialise an env *with* its mid-episode state (zlib-compressed pickle).

    Args:
        env: The environment, including wrappers.

    Returns:
        The blob; restore it with :func:`load_env`.
    """
    buf = io.BytesIO()
    _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(env)
    return zlib.compress(buf.getvalue(), 1)


def load_env(blob: bytes) -> gym.Env:
    """Restore an env saved with :func:`dump_env` (trusted data only: it unpickles)."""
    return pickle.loads(zlib.decompress(blob))
