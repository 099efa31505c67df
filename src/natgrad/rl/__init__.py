"""Reinforcement learning with natural gradients: TRPO and NPG on Gymnasium.

>>> from natgrad.rl import TRPO, TRPOConfig
>>> TRPOConfig(env_id="Pendulum-v1").max_kl
0.01
"""

from natgrad.rl.agent import NPG, TRPO, Agent, RolloutError
from natgrad.rl.config import AgentConfig, NPGConfig, TRPOConfig
from natgrad.rl.policies import ActorCritic

__all__ = [
    "NPG",
    "TRPO",
    "ActorCritic",
    "Agent",
    "AgentConfig",
    "NPGConfig",
    "RolloutError",
    "TRPOConfig",
]
