"""Acting with a trained policy: env-ready actions and deterministic evaluation episodes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from natgrad.rl.envs import EnvFactory, ObsEncoder, action_to_env
from natgrad.rl.normalize import ObsNormalizer


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
        self.single_shape = observation_space.shape

    def __call__(
        self, obs: Any, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        raw = np.asarray(obs)
        single = raw.shape == tuple(self.single_shape or ())
        if single:
            raw = raw[None]
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
    env_id: str,
    actor: Actor,
    episodes: int = 10,
    seed: int = 10_000,
    *,
    deterministic: bool = True,
    max_steps: int | None = None,
) -> np.ndarray:
    """Undiscounted returns of ``episodes`` episodes, env ``k`` reset with ``seed + k``."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} must be an int >= 1")
    env = EnvFactory(env_id)(0, seed)
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    try:
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
    finally:
        env.close()
    return returns
