"""Environment construction, checks and serialisation, and the vector-env interface.

The rollout layer supports these gymnasium spaces:

* observations: ``Box`` (flattened to a vector) and ``Discrete`` (one-hot encoded);
* actions: ``Box`` (Gaussian policy), ``Discrete`` (categorical), ``MultiDiscrete``
  (one categorical per sub-action) and ``MultiBinary`` (independent Bernoullis).

Environments are built by a picklable :class:`EnvFactory` so that subprocess (and,
later, Ray) workers can construct them from the same description. :class:`VecEnv` is
the SAME-STEP vector-env interface (documented in :mod:`natgrad.rl.vec`, which holds
our backends); :class:`GymVectorAdapter` presents a user's
:class:`gymnasium.vector.VectorEnv` through it. Both are re-exported by
:mod:`natgrad.rl.vec`.
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

from natgrad.rl.sampler import ObsEncoder, action_to_env  # re-exported: older import path

__all__ = [
    "EnvFactory",
    "GymVectorAdapter",
    "ObsEncoder",
    "VecEnv",
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


# (obs, rewards, terminated, truncated, final_obs, infos or None)
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]


def _obs_buffer(space: gym.Space, n: int) -> np.ndarray:
    if space.shape is None:
        raise ValueError(
            f"unsupported observation space {space!r}: vector envs need a fixed-shape space "
            "(Box or Discrete); wrap the env, e.g. with gymnasium.wrappers.FlattenObservation"
        )
    return np.zeros((n, *space.shape), dtype=space.dtype)


class VecEnv:
    """Common interface of the vector envs (see the module docstring)."""

    n_envs: int
    env_indices: tuple[int, ...]
    observation_space: gym.Space
    action_space: gym.Space
    no_final: np.ndarray  # read-only zeros, returned as final_obs when no env ended

    def reset(self, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        """Reset all envs (``seeds[i]`` for env ``i``) and return the observations."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepResult:
        """Step all envs with SAME-STEP autoreset; see the module docstring."""
        raise NotImplementedError

    def get_state(self) -> list[bytes]:
        """Return one serialised env (with its mid-episode state) per env, in order."""
        raise NotImplementedError

    def set_state(self, state: Sequence[bytes]) -> None:
        """Replace the envs by those serialised in ``state`` (from :meth:`get_state`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the envs (and workers)."""

    def _setup(self, n: int, env_indices: Sequence[int] | None) -> None:
        if n == 0:
            raise ValueError("no envs given; pass at least one env constructor")
        self.n_envs = n
        self.env_indices = tuple(range(n) if env_indices is None else env_indices)
        if len(self.env_indices) != n:
            raise ValueError(f"env_indices has {len(self.env_indices)} entries for {n} envs")

    def _set_spaces(self, obs_space: gym.Space, act_space: gym.Space) -> None:
        self.observation_space, self.action_space = obs_space, act_space
        self.no_final = _obs_buffer(obs_space, self.n_envs)
        self.no_final.flags.writeable = False

    def _seeds(self, seeds: Sequence[int | None] | None) -> list[int | None]:
        seeds = [None] * self.n_envs if seeds is None else list(seeds)
        if len(seeds) != self.n_envs:
            raise ValueError(f"seeds has {len(seeds)} entries for {self.n_envs} envs")
        return seeds

    def _check_state(self, state: Sequence[bytes]) -> None:
        if len(state) != self.n_envs:
            raise ValueError(
                f"state holds {len(state)} envs but this vector env has {self.n_envs}; "
                "pass the get_state() of a vector env with the same envs"
            )

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GymVectorAdapter(VecEnv):
    """Presents a :class:`gymnasium.vector.VectorEnv` through the SAME-STEP interface.

    The mode is read from ``venv.metadata["autoreset_mode"]`` (``NEXT_STEP``, gymnasium's
    default, when absent):

    * ``SAME_STEP``: ``obs`` already holds the reset observations; the final ones are read
      from ``info["final_obs"]`` (masked by ``info["_final_obs"]``).
    * ``NEXT_STEP`` and ``DISABLED``: the obs returned for a finished env is its final
      obs. The adapter copies it into ``final_obs`` and at once calls
      ``venv.reset(options={"reset_mask": done})``, which resets only the finished
      sub-envs (unseeded, exactly like an autoreset) and clears their pending autoreset.
      The reset step that ``NEXT_STEP`` would otherwise run inside the next ``step`` (a
      fake transition with reward 0 that ignores the action) therefore never happens:
      every ``step`` is a real transition for every env. Needs ``reset_mask`` support
      (gymnasium >= 1.1 ``SyncVectorEnv``/``AsyncVectorEnv``).

    ``infos`` (with ``return_infos=True``) is gymnasium's info dict of the step.
    ``get_state``/``set_state`` need ``venv.unwrapped`` to be a ``SyncVectorEnv``; the state
    of vector *wrappers* is not saved.

    Args:
        venv: The vector env; its actions are our actions (clipped, offset) batched.
        env_indices: Global env index of each sub-env (default ``0..N-1``).
        return_infos: Whether ``step`` returns gymnasium's info dict.
    """

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        *,
        env_indices: Sequence[int] | None = None,
        return_infos: bool = False,
    ) -> None:
        if not isinstance(venv, gym.vector.VectorEnv):
            raise ValueError(f"venv must be a gymnasium.vector.VectorEnv, got {type(venv)}")
        self.venv = venv
        self._setup(int(venv.num_envs), env_indices)
        self._set_spaces(venv.single_observation_space, venv.single_action_space)
        mode = venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        self.autoreset_mode = gym.vector.AutoresetMode(mode)
        self.return_infos = return_infos

    def reset(self, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        obs, _ = self.venv.reset(seed=None if seeds is None else list(seeds))  # type: ignore[arg-type]
        return np.asarray(obs)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step all envs with SAME-STEP autoreset; see the class docstring."""
        obs, rew, term, trunc, info = self.venv.step(actions)
        obs = np.asarray(obs)
        rew = np.asarray(rew, dtype=np.float64)
        term = np.asarray(term, dtype=np.bool_)
        trunc = np.asarray(trunc, dtype=np.bool_)
        done = term | trunc
        final = self.no_final
        if done.any():
            final = np.zeros_like(self.no_final)
            if self.autoreset_mode is gym.vector.AutoresetMode.SAME_STEP:
                for i in np.flatnonzero(info["_final_obs"]):
                    final[i] = info["final_obs"][i]
            else:
                final[done] = obs[done]
                try:
                    obs = np.asarray(self.venv.reset(options={"reset_mask": done})[0])
                except (TypeError, ValueError, KeyError, NotImplementedError) as err:
                    raise RuntimeError(
                        f"{type(self.venv).__name__} cannot reset only the finished envs "
                        f"(options['reset_mask']: {err}); build it with "
                        "autoreset_mode=AutoresetMode.SAME_STEP instead"
                    ) from err
        return obs, rew, term, trunc, final, info if self.return_infos else None

    def _sync_base(self) -> gym.vector.SyncVectorEnv:
        base = self.venv.unwrapped
        if not isinstance(base, gym.vector.SyncVectorEnv):
            raise NotImplementedError(
                f"get_state/set_state need a gymnasium SyncVectorEnv, got {type(base).__name__}; "
                "use natgrad's SyncVecEnv/AsyncVecEnv for checkpointable envs"
            )
        return base

    def get_state(self) -> list[bytes]:
        """Return one serialised sub-env per env (SyncVectorEnv only)."""
        return [dump_env(env) for env in self._sync_base().envs]

    def set_state(self, state: Sequence[bytes]) -> None:
        """Replace the sub-envs by those in ``state`` (SyncVectorEnv only)."""
        base = self._sync_base()
        self._check_state(state)
        base.envs = [load_env(blob) for blob in state]
        if hasattr(base, "_autoreset_envs"):
            base._autoreset_envs[:] = False

    def close(self) -> None:
        """Close the wrapped vector env."""
        self.venv.close()
