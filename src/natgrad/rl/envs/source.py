"""What ``TRPO(env)`` accepts, and how it becomes vector envs.

``env`` may be

* a registered id: ``"Hopper-v5"``, or ``"my_pkg.envs:MyEnv-v0"`` (the module is imported
  first, so its ``gymnasium.register`` calls run);
* a zero-argument factory: a class or function returning a ``gymnasium.Env``;
* a ``gymnasium.Env`` object;
* a ``gymnasium.vector.VectorEnv``.

Ids and factories can build as many envs as asked, in this process, in subprocesses or
on Ray workers (a factory must then be picklable: a top-level class or function, or a
``functools.partial`` of one). A single env object is one env in this process; a
vector env is its own number of envs in this process.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from natgrad.rl.envs.make import EnvFactory
from natgrad.rl.envs.subproc import AsyncVecEnv
from natgrad.rl.envs.vec import GymVectorAdapter, SyncVecEnv, VecEnv

__all__ = ["EnvSource", "env_source"]


@dataclass
class EnvSource:
    """Where a run's envs come from (build it with :func:`env_source`).

    Attributes:
        env_id: The registered id, when there is one (presets, ``config.json`` and resume
            checks use it); ``None`` for an unregistered env.
        factory: Builds env ``i`` (ids and factories), or ``None``.
        env: The user's single env object, or ``None``.
        vector_env: The user's vector env, or ``None``.
        env_kwargs: Keyword arguments for ``gymnasium.make`` or the factory.
    """

    env_id: str | None
    factory: EnvFactory | None = None
    env: gym.Env | None = None
    vector_env: gym.vector.VectorEnv | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fixed_n_envs(self) -> int | None:
        """The number of envs an object brings (1, or the vector env's), else ``None``."""
        if self.env is not None:
            return 1
        if self.vector_env is not None:
            return int(self.vector_env.num_envs)
        return None

    def describe(self) -> str:
        """A short description for logs and ``config.json``."""
        if self.env_id is not None:
            return self.env_id
        if self.factory is not None:
            fn = self.factory.env_id
            return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        obj = self.env if self.env is not None else self.vector_env
        return f"{type(obj).__module__}.{type(obj).__qualname__} object"

    def check(self, n_envs: int, vec: str) -> None:
        """Refuse a rollout set-up this source cannot provide, saying what to pass instead."""
        fixed = self.fixed_n_envs
        if fixed is None:
            return
        what = "a single env object" if self.env is not None else "a VectorEnv object"
        if vec != "sync":
            raise ValueError(
                f"vec={vec!r} needs an env id or a picklable zero-argument factory (the "
                f"workers build their own envs), but env is {what}; pass e.g. "
                "TRPO(MyEnv, vec='async') with the class instead of an instance"
            )
        if n_envs != fixed:
            raise ValueError(
                f"n_envs={n_envs}, but env is {what} holding {fixed} env(s); pass an env id "
                "or a zero-argument factory (e.g. the env class) to get several envs, or "
                f"leave n_envs at {fixed}"
            )

    def make_vec(
        self,
        n_envs: int,
        seed: int,
        *,
        vec: str = "sync",
        env_indices: Sequence[int] | None = None,
        vec_kwargs: Mapping[str, Any] | None = None,
    ) -> VecEnv:
        """The vector env over envs ``env_indices`` (default ``0..n_envs-1``)."""
        self.check(n_envs, vec)
        indices = list(range(n_envs)) if env_indices is None else list(env_indices)
        if self.vector_env is not None:
            return GymVectorAdapter(self.vector_env, env_indices=indices)
        if self.env is not None:
            env = self.env
            return SyncVecEnv([lambda: env], env_indices=indices)
        assert self.factory is not None  # env_source sets one of the three
        fns: list[Callable[[], gym.Env]] = [
            functools.partial(self.factory, i, seed) for i in indices
        ]
        if vec == "sync":
            return SyncVecEnv(fns, env_indices=indices)
        if vec == "async":
            return AsyncVecEnv(fns, env_indices=indices, **dict(vec_kwargs or {}))
        raise ValueError(f"vec={vec!r}; use 'sync' or 'async' (Ray has its own collector)")

    def make_eval_env(self, seed: int | None = None) -> gym.Env:
        """A fresh env for evaluation, separate from the training envs."""
        if self.factory is not None:
            return self.factory(0, seed)
        if self.vector_env is not None:
            fns = getattr(self.vector_env, "env_fns", None)
            if fns:
                return fns[0]()
            raise ValueError(
                "cannot build an evaluation env from this VectorEnv (it has no env_fns); "
                "pass eval_env=... (an env, an id or a factory)"
            )
        try:
            return copy.deepcopy(self.env)  # type: ignore[arg-type]
        except Exception as err:
            raise ValueError(
                f"cannot copy the training env for evaluation ({type(err).__name__}: {err}); "
                "pass eval_env=... (an env, an id or a factory)"
            ) from None


def env_source(env: Any, env_kwargs: Mapping[str, Any] | None = None) -> EnvSource:
    """Resolve what a user passed as ``env`` (see the module docstring).

    Raises:
        ValueError: For anything else, or an unknown id (with close matches).
    """
    kwargs = dict(env_kwargs or {})
    if isinstance(env, EnvSource):
        return env
    if isinstance(env, str):
        return EnvSource(env_id=env, factory=EnvFactory(env, kwargs), env_kwargs=kwargs)
    if isinstance(env, EnvFactory):
        env_id = env.env_id if isinstance(env.env_id, str) else None
        return EnvSource(env_id=env_id, factory=env, env_kwargs=dict(env.kwargs))
    if isinstance(env, gym.vector.VectorEnv):
        _no_kwargs(kwargs, "a VectorEnv object")
        spec = getattr(env, "spec", None)
        return EnvSource(env_id=getattr(spec, "id", None), vector_env=env)
    if isinstance(env, gym.Env):
        _no_kwargs(kwargs, "an env object")
        spec = env.spec
        return EnvSource(env_id=spec.id if spec is not None else None, env=env)
    if callable(env):
        return EnvSource(env_id=None, factory=EnvFactory(env, kwargs), env_kwargs=kwargs)
    raise ValueError(
        f"env={env!r} is not an env: pass a Gymnasium id (e.g. 'CartPole-v1' or "
        "'my_pkg.envs:MyEnv-v0'), a gymnasium.Env, a zero-argument factory returning one, "
        "or a gymnasium.vector.VectorEnv"
    )


def _no_kwargs(kwargs: Mapping[str, Any], what: str) -> None:
    if kwargs:
        raise ValueError(
            f"env_kwargs={dict(kwargs)!r} cannot apply to {what}, which is already built; "
            "pass the env id or factory instead, or build the env with those arguments"
        )
