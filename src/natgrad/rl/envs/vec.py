"""Vector environments with SAME-STEP autoreset: the interface and the in-process backends.

Every backend exposes the same interface (:class:`VecEnv`):

* ``reset(seeds) -> obs`` with ``obs`` of shape ``(N, *obs_space.shape)``;
* ``step(actions) -> (obs, rewards, terminated, truncated, final_obs, infos)`` where,
  for every env ``i`` that ended this step (``terminated[i] | truncated[i]``), ``obs[i]``
  is already the observation after the automatic reset and ``final_obs[i]`` is the true
  last observation of the finished episode. ``final_obs`` is dense ``(N, *obs_shape)``
  and holds zeros in the rows of envs that did not end (it is a shared read-only zero
  array, ``venv.no_final``, when nothing ended: ``final_obs is venv.no_final`` is a cheap
  "nothing ended" test). ``infos`` is ``None`` unless ``return_infos=True``, in
  which case it is a list of per-env info dicts (the finished step's info is under
  ``"final_info"``).

Backends: :class:`SyncVecEnv` (plain loop in this process), :class:`GymVectorAdapter`
(wraps a user's :class:`gymnasium.vector.VectorEnv` in any ``autoreset_mode``) and
:class:`~natgrad.rl.envs.subproc.AsyncVecEnv` (subprocesses, talking over Pipes).

``get_state()`` returns one ``bytes`` blob per env (in env order), so a checkpoint can be
restored mid-episode by any backend with any grouping of envs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from natgrad.rl.envs import obs_tree
from natgrad.rl.envs.make import EnvStateError, dump_env, load_env
from natgrad.rl.envs.masks import mask_method

__all__ = ["GymVectorAdapter", "StepResult", "StepWatch", "SyncVecEnv", "VecEnv"]


class StepWatch:
    """Which env is inside ``step()``, since when, at which step of the rollout.

    The stepping loop writes it; a watchdog in another thread (a Ray worker's) or process
    (:class:`~natgrad.rl.envs.subproc.AsyncVecEnv`'s parent, through shared memory)
    reads it to stop a hung env and name it. Three floats: the global env index (-1:
    none yet), the ``time.monotonic()`` at which its step began (0: not in a step), and
    the rollout step.

    Args:
        buffer: Where the three floats live (a ``multiprocessing`` ``RawArray`` to share
            them with another process); a fresh list by default.
    """

    def __init__(self, buffer: Any = None) -> None:
        self.buf = buffer if buffer is not None else [-1.0, 0.0, -1.0]

    def enter(self, env: int) -> None:
        self.buf[0] = env
        self.buf[1] = time.monotonic()

    def leave(self) -> None:
        self.buf[1] = 0.0

    def stuck(self) -> tuple[int, float, int] | None:
        """``(env, seconds in step(), rollout step)``, or ``None`` between steps."""
        since = self.buf[1]
        if since <= 0.0:
            return None
        return int(self.buf[0]), time.monotonic() - since, int(self.buf[2])


# (obs, rewards, terminated, truncated, final_obs, infos or None)
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]


class VecEnv:
    """Common interface of the vector envs (see the module docstring)."""

    n_envs: int
    env_indices: tuple[int, ...]
    observation_space: gym.Space
    action_space: gym.Space
    no_final: Any  # read-only zeros, returned as final_obs when no env ended
    masks: list[Any] | None = None
    """The envs' action masks for their current observations (after ``reset`` and each
    ``step``; raw, one per env, checked by the collector), or ``None`` when the envs give
    none (see :mod:`~natgrad.rl.envs.masks`)."""

    def reset(self, seeds: Sequence[int | None] | None = None) -> Any:
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
        self.no_final = obs_tree.readonly(obs_tree.obs_buffer(obs_space, self.n_envs))

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
        self._mask_mode: str | None = None

    def reset(self, seeds: Sequence[int | None] | None = None) -> Any:
        obs, info = self.venv.reset(seed=None if seeds is None else list(seeds))  # type: ignore[arg-type]
        self._mask_mode = None
        base = self.venv.unwrapped
        if "action_mask" in info:
            self._mask_mode = "info"
        elif isinstance(base, gym.vector.SyncVectorEnv) and all(
            mask_method(env) is not None for env in base.envs
        ):  # (asked in this process only: a failed call would break an AsyncVectorEnv)
            self._mask_mode = "call"
        self.masks = self._read_masks(info)
        return _as_arrays(obs)

    def _read_masks(self, info: dict[str, Any], reset_info: dict[str, Any] | None = None,
                    done: np.ndarray | None = None) -> list[Any] | None:  # fmt: skip
        if self._mask_mode == "call":
            base = self.venv.unwrapped
            return [mask_method(env)() for env in base.envs]  # type: ignore[attr-defined, misc]
        if self._mask_mode == "info":
            masks = list(np.asarray(info["action_mask"]))
            if reset_info is not None and done is not None and "action_mask" in reset_info:
                for i in np.flatnonzero(done):
                    masks[i] = np.asarray(reset_info["action_mask"])[i]
            return masks
        return None

    def step(self, actions: np.ndarray) -> StepResult:
        """Step all envs with SAME-STEP autoreset; see the class docstring."""
        obs, rew, term, trunc, info = self.venv.step(actions)
        obs = _as_arrays(obs)
        reset_info = None
        rew = np.asarray(rew, dtype=np.float64)
        term = np.asarray(term, dtype=np.bool_)
        trunc = np.asarray(trunc, dtype=np.bool_)
        done = term | trunc
        final = self.no_final
        if done.any():
            final = obs_tree.zeros_like(self.no_final)
            if self.autoreset_mode is gym.vector.AutoresetMode.SAME_STEP:
                for i in np.flatnonzero(info["_final_obs"]):
                    obs_tree.put(final, i, info["final_obs"][i])
            else:
                obs_tree.put(final, done, obs_tree.take(obs, done))
                try:
                    obs, reset_info = self.venv.reset(options={"reset_mask": done})
                    obs = _as_arrays(obs)
                except (TypeError, ValueError, KeyError, NotImplementedError) as err:
                    raise RuntimeError(
                        f"{type(self.venv).__name__} cannot reset only the finished envs "
                        f"(options['reset_mask']: {err}); build it with "
                        "autoreset_mode=AutoresetMode.SAME_STEP instead"
                    ) from err
        if self._mask_mode is not None:
            self.masks = self._read_masks(info, reset_info, done)
        return obs, rew, term, trunc, final, info if self.return_infos else None

    def _sync_base(self) -> gym.vector.SyncVectorEnv:
        base = self.venv.unwrapped
        if not isinstance(base, gym.vector.SyncVectorEnv):
            raise EnvStateError(
                f"the env states of a {type(base).__name__} cannot be saved (only a "
                "gymnasium SyncVectorEnv's can); for checkpoints that resume mid-episode, pass "
                "an env id or a factory with n_envs= (and vec='async' for subprocesses)"
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


def _as_arrays(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: np.asarray(v) for k, v in obs.items()}
    return np.asarray(obs)


class SyncVecEnv(VecEnv):
    """Steps its envs one after the other in this process.

    Hand-written rather than ``gymnasium.vector.SyncVectorEnv`` because it pays:
    ``python bench/vec_envs.py --repeats 3`` (``bench/results/vec_envs.jsonl``) measured
    natgrad's collector over it at 1.49× (CartPole-v1, 1 env) and 1.27× (8 envs) the
    rollout rate over gymnasium's, 1.27× and 1.12× on Hopper-v5. gymnasium's vector envs
    still work: pass one to ``TRPO(env)``.

    Args:
        env_fns: Zero-argument callables building the envs.
        env_indices: Global env index of each env (used in error messages; default
            ``0..N-1``).
        return_infos: Whether ``step`` returns the per-env info dicts.
        watch: A :class:`StepWatch` to write each env's step into (for a watchdog).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        env_indices: Sequence[int] | None = None,
        return_infos: bool = False,
        watch: StepWatch | None = None,
    ) -> None:
        self._setup(len(env_fns), env_indices)
        self.return_infos = return_infos
        self.watch = watch
        self.envs: list[gym.Env] = []
        for i, fn in enumerate(env_fns):
            try:
                self.envs.append(fn())
            except ValueError:  # a bad id or a missing package: the user's to fix, as is
                self.close()
                raise
            except Exception as err:
                self.close()
                raise RuntimeError(
                    f"building env {self.env_indices[i]} failed: {type(err).__name__}: {err}"
                ) from err
        try:
            self._set_spaces(self.envs[0].observation_space, self.envs[0].action_space)
        except ValueError:
            self.close()
            raise
        self._obs = obs_tree.obs_buffer(self.observation_space, self.n_envs)
        self._mask_fns: list[Any] | None = None
        self._mask_info = False

    def _fail(self, i: int, what: str, err: Exception) -> RuntimeError:
        return RuntimeError(
            f"env {self.env_indices[i]} raised in {what}: {type(err).__name__}: {err}"
        )

    def reset(self, seeds: Sequence[int | None] | None = None) -> Any:
        seeds = self._seeds(seeds)
        obs = obs_tree.copy(self._obs)
        infos = []
        for i, env in enumerate(self.envs):
            try:
                o, info = env.reset(seed=seeds[i])
            except Exception as err:
                raise self._fail(i, "reset", err) from err
            obs_tree.put(obs, i, o)
            infos.append(info)
        fns = [mask_method(env) for env in self.envs]
        self._mask_fns = fns if all(fn is not None for fn in fns) else None
        self._mask_info = self._mask_fns is None and "action_mask" in infos[0]
        self.masks = None
        if self._mask_fns is not None:
            self.masks = [fn() for fn in self._mask_fns if fn is not None]
        elif self._mask_info:
            self.masks = [info.get("action_mask") for info in infos]
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        n = self.n_envs
        obs = obs_tree.empty_like(self._obs)
        rew = np.empty(n, dtype=np.float64)
        term = np.empty(n, dtype=np.bool_)
        trunc = np.empty(n, dtype=np.bool_)
        final = self.no_final
        infos: list[dict] | None = [] if self.return_infos else None
        mask_fns, mask_info = self._mask_fns, self._mask_info
        masks: list[Any] | None = [] if mask_fns is not None or mask_info else None
        i, watch = 0, self.watch
        try:
            for i, env in enumerate(self.envs):
                if watch is not None:
                    watch.enter(self.env_indices[i])
                o, r, te, tr, info = env.step(actions[i])
                mask_src = info
                if te or tr:
                    if final is self.no_final:
                        final = obs_tree.zeros_like(self._obs)
                    obs_tree.put(final, i, o)
                    o, reset_info = env.reset()
                    mask_src = reset_info
                    if infos is not None:
                        info = {**reset_info, "final_info": info}
                if masks is not None:
                    masks.append(mask_fns[i]() if mask_fns else mask_src.get("action_mask"))
                obs_tree.put(obs, i, o)
                rew[i] = r
                term[i] = te
                trunc[i] = tr
                if infos is not None:
                    infos.append(info)
        except Exception as err:
            raise self._fail(i, "step", err) from err
        if watch is not None:
            watch.leave()
        self.masks = masks
        return obs, rew, term, trunc, final, infos

    def get_state(self) -> list[bytes]:
        return [dump_env(env) for env in self.envs]

    def set_state(self, state: Sequence[bytes]) -> None:
        self._check_state(state)
        new = [load_env(blob) for blob in state]
        self.close()
        self.envs = new
        if self._mask_fns is not None:  # the masks of the restored envs, not the old ones
            self._mask_fns = [mask_method(env) for env in new]

    def close(self) -> None:
        """Close the envs."""
        for env in self.envs:
            env.close()
