"""Environments: building them from what a user gives, their spaces, and vector backends.

* :mod:`~natgrad.rl.envs.make`: ids (``"Hopper-v5"``, ``"my_pkg.envs:MyEnv-v0"``),
  :class:`EnvFactory` (picklable, for workers), env serialisation;
* :mod:`~natgrad.rl.envs.source`: what ``TRPO(env)`` accepts (an id, a
  ``gymnasium.Env``, a factory, a ``gymnasium.vector.VectorEnv``);
* :mod:`~natgrad.rl.envs.spaces`: the spaces the policies take and the conversions;
* :mod:`~natgrad.rl.envs.vec`, :mod:`~natgrad.rl.envs.subproc`: SAME-STEP vector envs
  in this process or in subprocesses.
"""

from natgrad.rl.envs.make import EnvFactory, check_env_id, dump_env, load_env, make_env
from natgrad.rl.envs.source import EnvSource, env_source
from natgrad.rl.envs.spaces import ObsEncoder, action_to_env, check_spaces, kind_for_space
from natgrad.rl.envs.subproc import AsyncVecEnv
from natgrad.rl.envs.vec import GymVectorAdapter, SyncVecEnv, VecEnv

__all__ = [
    "AsyncVecEnv",
    "EnvFactory",
    "EnvSource",
    "GymVectorAdapter",
    "ObsEncoder",
    "SyncVecEnv",
    "VecEnv",
    "action_to_env",
    "check_env_id",
    "check_spaces",
    "dump_env",
    "env_source",
    "kind_for_space",
    "load_env",
    "make_env",
]
