"""Building environments from what a user gives, checking ids, and env serialisation.

Environments are built by a picklable :class:`EnvFactory`, so that subprocess and Ray
workers construct them from the same description. :func:`dump_env` / :func:`load_env`
serialise an env *with* its mid-episode state, for bit-exact checkpoints.
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
from gymnasium.utils.ezpickle import EzPickle

__all__ = [
    "EnvFactory",
    "check_env_id",
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
    try:  # gymnasium's own message: "Did you mean ...", "Have you installed ...?"
        gym.spec(name)
        own = ""
    except gym.error.Error as err:
        own = f" ({err})"
    hint = _NAMESPACE_HINTS.get(ns or "", "")
    matches = difflib.get_close_matches(name, list(registry.keys()), n=3, cutoff=0.6)
    if matches and not hint:
        hint, own = "did you mean " + " or ".join(repr(m) for m in matches) + "?", ""
    hint = hint or "see gymnasium.pprint_registry() for the registered ids"
    raise ValueError(f"unknown env id {env_id!r}{own}; {hint}")


# Packages that register their envs on import: what to install and which id to pass.
_NAMESPACE_HINTS = {
    "ALE": "install the Atari extra (`pip install ale-py`, or natgrad[atari]) and pass the id "
    "with its module, e.g. 'ale_py:ALE/Pong-v5' (importing ale_py registers the ALE envs)",
}


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
        try:
            env = gym.make(env_id, **kwargs)
        except gym.error.DependencyNotInstalled as err:  # gymnasium names the extra
            raise ValueError(f"env {env_id!r} needs a missing package: {err}") from None
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


def _rebuild_object(cls: Any, state: dict[str, Any]) -> Any:
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
