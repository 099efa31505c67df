"""A collector without envs, for a model loaded without one: it can act, not train.

SB3 lets ``TRPO.load(path)`` return a model whose env is ``None``; natgrad does the same
when the checkpoint's env cannot be rebuilt here (an unregistered class, a wrapped env
object). The model keeps the spaces and the observation normaliser, so ``predict``
works; ``learn`` asks for an env (``set_env``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from natgrad.rl.envs.make import EnvStateError
from natgrad.rl.envs.spaces import ObsEncoder
from natgrad.rl.rollout.batch import RolloutBatch
from natgrad.rl.rollout.normalize import ObsNormalizer, RewardScaler

__all__ = ["DetachedCollector"]


class DetachedCollector:
    """The :class:`~natgrad.rl.rollout.collector.Collector` of a model with no envs."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        clip_obs: float = 10.0,
        gamma: float = 0.99,
        description: str = "no env",
    ) -> None:
        self.n_envs = 0
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_dim = ObsEncoder(observation_space).dim
        self.obs_normalizer = (
            ObsNormalizer((self.obs_dim,), clip=clip_obs) if normalize_obs else None
        )
        self.reward_scaler = RewardScaler(gamma) if normalize_reward else None
        self.description = description

    def collect(self, sampler: Any, n_steps: int) -> RolloutBatch:
        raise ValueError(
            f"this model has no env ({self.description}): it can predict, not train; give "
            "it one with model.set_env(env), or load it with TRPO.load(path, env=...)"
        )

    def update_stats(self, batch: RolloutBatch) -> None:
        """Nothing to update: no batch is ever collected."""

    def state_dict(self) -> dict[str, Any]:
        raise EnvStateError("a model without envs has no env states to save")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise EnvStateError("a model without envs has no env states to restore")

    def close(self) -> None:
        """Nothing to release."""
