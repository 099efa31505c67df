"""Acting with a trained policy: env-ready actions, with checked inputs, and evaluation.

:class:`Actor` is a frozen snapshot of a policy (a sampler and the observation
normaliser's statistics) that maps raw observations, one or a batch, to env actions.
:func:`evaluate` runs deterministic episodes with it on an env of its own.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from natgrad.rl.envs.spaces import ObsEncoder, action_to_env
from natgrad.rl.rollout.normalize import ObsNormalizer

__all__ = ["Actor", "evaluate"]


class Actor:
    """Maps raw observations to env actions with a sampler and frozen normalisation.

    Args:
        sampler: A sampler from :meth:`ActorCritic.sampler`.
        observation_space, action_space: The single-env spaces.
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
        self.single_shape = tuple(observation_space.shape or ())

    def check_obs(self, obs: Any) -> tuple[np.ndarray, bool]:
        """``(batch of raw observations, whether one was given)``; refuses bad input.

        Raises:
            ValueError: For a shape that is neither one observation nor a batch of them
                (naming the expected shape), or a non-finite entry.
        """
        try:
            raw = np.asarray(obs)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"obs cannot be read as an array ({err})") from None
        shape = self.single_shape
        single = raw.shape == shape
        if not single and (raw.ndim != len(shape) + 1 or raw.shape[1:] != shape):
            raise ValueError(
                f"obs has shape {raw.shape}; expected one observation of shape {shape} or "
                f"a batch of shape (n, {', '.join(map(str, shape))})".replace(", )", ")")
            )
        if raw.dtype.kind not in "biuf":
            raise ValueError(f"obs has dtype {raw.dtype}; expected numbers")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            bad = np.argwhere(~np.isfinite(raw))[0].tolist()
            raise ValueError(
                f"obs holds a non-finite value at index {bad}; the policy cannot act on NaN/inf"
            )
        return (raw[None] if single else raw), single

    def __call__(
        self, obs: Any, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Env actions for one raw observation or a batch (checked by :meth:`check_obs`)."""
        raw, single = self.check_obs(obs)
        x = self.encode(raw).astype(np.float32)
        if self.obs_normalizer is not None:
            x = self.obs_normalizer.normalize(x).astype(np.float32)
        if deterministic:
            actions = self.sampler.mode(x)
        else:
            rng = rng if rng is not None else np.random.default_rng()
            shape = (x.shape[0], *self.sampler.noise_shape)
            noise = (
                rng.standard_normal(shape, dtype=np.float32)
                if self.sampler.noise_kind == "normal"
                else rng.random(shape, dtype=np.float32)
            )
            actions = self.sampler.sample(x, noise)
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
    pair ``(returns, lengths)``."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} must be an int >= 1")
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done, steps = False, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(
                actor(obs, deterministic=deterministic, rng=rng)
            )
            returns[k] += float(reward)
            steps += 1
            done = terminated or truncated or (max_steps is not None and steps >= max_steps)
        lengths[k] = steps
    return (returns, lengths) if return_episode_lengths else returns
