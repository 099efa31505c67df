"""Policies: the actor-critic networks, their action distributions and rollout samplers."""

from natgrad.rl.policies.actor_critic import ActorCritic, Tanh, mlp
from natgrad.rl.policies.sampler import NumpyMLPSampler, TorchSampler

__all__ = ["ActorCritic", "NumpyMLPSampler", "Tanh", "TorchSampler", "mlp"]
