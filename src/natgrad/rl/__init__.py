"""Reinforcement learning with natural gradients: TRPO and NPG on Gymnasium.

The data flows one way through small subpackages::

    envs (ids, objects, factories → vector envs) → rollout (collectors → RolloutBatch,
    GAE, normalisation) → algos (TRPO / NPG step, critic fit) → callbacks

>>> from natgrad.rl import TRPO, TRPOConfig
>>> TRPOConfig().max_kl
0.01
"""

from natgrad.rl.algos import NPG, TRPO, OnPolicyAlgorithm
from natgrad.rl.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from natgrad.rl.config import NPGConfig, PolicyConfig, RolloutConfig, RunConfig, TRPOConfig
from natgrad.rl.errors import RolloutError
from natgrad.rl.policies import ActorCritic

__all__ = [
    "NPG",
    "TRPO",
    "ActorCritic",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "NPGConfig",
    "OnPolicyAlgorithm",
    "PolicyConfig",
    "RolloutConfig",
    "RolloutError",
    "RunConfig",
    "StopTrainingOnRewardThreshold",
    "TRPOConfig",
]
