"""Acting with a trained policy: env-ready actions, with checked inputs, and evaluation.

:class:`Actor` is a frozen snapshot of a policy (a sampler and the observation
normaliser's statistics) that maps raw observations, one or a batch, to env actions.
:func:`evaluate` runs deterministic episodes with it on an env of its own.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from natgrad.rl.envs.masks import check_masks, mask_method
from natgrad.rl.envs.spaces import ObsEncoder, action_to_env
from natgrad.rl.rollout.normalize import ObsNormalizer

__all__ = ["Actor", "evaluate"]


class Actor:
    """Maps raw observations to env actions with a sampler and frozen normalisation.

    Args:
        sampler: A sampler from :meth:`ActorCritic.sampler`.
        observation_space: The single-env observation space.
        action_space: The single-env action space.
        obs_normalizer: The training run's normaliser (its statistics are only read).
    """

    def __init__(
        self,
        sampler: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        obs_normalizer: ObsNormalizer | None = None,
    ) -> None:
        self.sampler = sampler
        self.encode = ObsEncoder(observation_space)
        self.to_env = action_to_env(action_space)
        self.obs_normalizer = obs_normalizer
        self.observation_space = observation_space
        self.action_space = action_space
        self.single_shape = tuple(observation_space.shape or ())

    def check_obs(self, obs: Any) -> tuple[Any, bool]:
        """``(batch of raw observations, whether one was given)``; refuses bad input.

        A ``Dict`` space takes a dict of one observation per key, or of batches.

        Raises:
            ValueError: For a shape that is neither one observation nor a batch of them
                (naming the expected shape), or a non-finite entry; missing ``Dict`` keys.
        """
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            if not isinstance(obs, dict) or set(obs) != set(space.spaces):
                got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
                raise ValueError(
                    f"obs must be a dict with keys {sorted(space.spaces)} (the Dict "
                    f"observation space), got {got}"
                )
            out, flags = {}, set()
            for key, sub in space.spaces.items():
                out[key], single = self._check_one(
                    obs[key], tuple(sub.shape or ()), f"obs[{key!r}]"
                )
                flags.add(single)
            if len(flags) != 1:
                raise ValueError("obs mixes single observations and batches across its keys")
            return out, flags.pop()
        return self._check_one(obs, self.single_shape, "obs")

    def _check_one(self, obs: Any, shape: tuple[int, ...], name: str) -> tuple[np.ndarray, bool]:
        try:
            raw = np.asarray(obs)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"{name} cannot be read as an array ({err})") from None
        single = raw.shape == shape
        if not single and (raw.ndim != len(shape) + 1 or raw.shape[1:] != shape):
            raise ValueError(
                f"{name} has shape {raw.shape}; expected one observation of shape {shape} or "
                f"a batch of shape (n, {', '.join(map(str, shape))})".replace(", )", ")")
            )
        if raw.dtype.kind not in "biuf":
            raise ValueError(f"{name} has dtype {raw.dtype}; expected numbers")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            bad = np.argwhere(~np.isfinite(raw))[0].tolist()
            raise ValueError(
                f"{name} holds a non-finite value at index {bad}; the policy cannot act on NaN/inf"
            )
        space = self.observation_space
        if isinstance(space, spaces.Discrete):
            start, n = int(space.start), int(space.n)
            if (raw != np.round(raw)).any() or (raw < start).any() or (raw >= start + n).any():
                raise ValueError(
                    f"obs={obs!r} is not a state of {space}: expected integers in "
                    f"[{start}, {start + n - 1}]"
                )
        return (raw[None] if single else raw), single

    def __call__(
        self,
        obs: Any,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
        action_masks: Any = None,
    ) -> np.ndarray:
        """Env actions for one raw observation or a batch (checked by :meth:`check_obs`);
        ``action_masks``: one bool mask per observation (True = legal), or ``None``."""
        raw, single = self.check_obs(obs)
        x = self.encode(raw).astype(np.float32)
        if self.obs_normalizer is not None:
            x = self.obs_normalizer.normalize(x).astype(np.float32)
        masks = None
        if action_masks is not None:
            given = np.asarray(action_masks) if not isinstance(action_masks, list) else action_masks
            rows = [given] if single and np.ndim(given) == 1 else given
            masks = check_masks(rows, self.action_space, n=x.shape[0])
        if deterministic:
            actions = self.sampler.mode(x, masks) if masks is not None else self.sampler.mode(x)
        else:
            rng = rng if rng is not None else np.random.default_rng()
            shape = (x.shape[0], *self.sampler.noise_shape)
            noise = (
                rng.standard_normal(shape, dtype=np.float32)
                if self.sampler.noise_kind == "normal"
                else rng.random(shape, dtype=np.float32)
            )
            actions = (
                self.sampler.sample(x, noise, masks)
                if masks is not None
                else self.sampler.sample(x, noise)
            )
        out = self.to_env(actions)
        return out[0] if single else out


def evaluate(
    env: gym.Env,
    actor: Actor,
    episodes: int = 10,
    seed: int = 10_000,
    *,
    deterministic: bool = True,
    max_steps: int | None = None,
    return_episode_lengths: bool = False,
) -> Any:
    """Undiscounted returns of ``episodes`` episodes on ``env``, episode ``k`` reset with
    seed ``seed + k`` (the env is not closed); with ``return_episode_lengths``, the
    pair ``(returns, lengths)``. An env with action masks (``action_masks()`` or
    ``info["action_mask"]``) is only sent legal actions."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} must be an int >= 1")
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        done, steps = False, 0
        method = mask_method(env)
        while not done:
            mask = method() if method is not None else info.get("action_mask")
            obs, reward, terminated, truncated, info = env.step(
                actor(obs, deterministic=deterministic, rng=rng, action_masks=mask)
            )
            returns[k] += float(reward)
            steps += 1
            done = terminated or truncated or (max_steps is not None and steps >= max_steps)
        lengths[k] = steps
    return (returns, lengths) if return_episode_lengths else returns
