"""Actor-critic networks: separate actor and critic networks, and the action distribution.

The observation space picks the networks: an MLP on the flat observation for vectors,
and a feature extractor (:mod:`~natgrad.rl.policies.extractors`: a CNN per image, one
part per ``Dict`` key) in front of the MLP otherwise (SB3's ``CnnPolicy`` and
``MultiInputPolicy``); actor and critic each have their own.

The action space picks the distribution: a state-independent log σ Gaussian
for ``Box`` (or, with ``use_sde``, gSDE's state-dependent Gaussian,
:class:`~natgrad.distributions.StateDependentGaussian`), ``Categorical`` for
``Discrete``, ``MultiCategorical`` for ``MultiDiscrete`` and ``Bernoulli`` for
``MultiBinary``.  Users may pass their
own actor and critic modules: the actor maps observations to the
distribution's mean or logits, the critic to one value per observation.

Invalid-action masks (:mod:`~natgrad.rl.envs.masks`) set the illegal logits to ``-inf``
(:meth:`ActorCritic.distribution`); the categorical then is the renormalised
distribution over the legal actions.

Plain MLPs (:func:`natgrad.mlp.mlp_spec`, the one check) get the fast paths: the
numpy rollout sampler, the hand-linearised Fisher and the numpy critic fit. Any other
module gets the generic autograd paths, with one log line saying so; ``fast_paths=False``
turns the fast paths off for plain MLPs too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from natgrad.distributions import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    Distribution,
    MultiCategorical,
    StateDependentGaussian,
)
from natgrad.mlp import MLPSpec, mlp_spec
from natgrad.rl.config.policy import PolicyConfig
from natgrad.rl.envs.layout import obs_layout
from natgrad.rl.envs.spaces import kind_for_space
from natgrad.rl.policies.extractors import ObsFeatures, needs_extractor
from natgrad.rl.policies.sampler import NumpyMLPSampler, TorchSampler

log = logging.getLogger("natgrad")


class Tanh(nn.Tanh):
    """``tanh`` computed as ``2σ(2x) − 1``: the same function (to ~1e-7), several times faster.

    torch 2.13's CPU ``tanh`` kernel is about five times slower than its
    ``sigmoid`` on this machine, and the forward passes of TRPO's update are
    dominated by it.  It is still an ``nn.Tanh`` (the numpy sampler treats it as one).
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(2.0 * x).mul(2.0).sub(1.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": Tanh, "relu": nn.ReLU}


def mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    activation: str = "tanh",
    ortho_init: bool = True,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """``Linear → act → ... → Linear`` with orthogonal init (gain √2 hidden, ``out_gain`` last)."""
    layers: list[nn.Module] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], n_out))
    if ortho_init:
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            gain = out_gain if i == len(linears) - 1 else math.sqrt(2)
            nn.init.orthogonal_(lin.weight, gain=gain)
            nn.init.zeros_(lin.bias)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """A policy (actor) and a value function (critic) that share nothing.

    Args:
        obs_dim: Size of the (flattened, encoded) observation.
        action_space: The env's action space; it picks the distribution.
        policy_hidden: Hidden sizes of the default actor MLP.
        critic_hidden: Hidden sizes of the default critic MLP.
        activation: ``"tanh"`` or ``"relu"``.
        ortho_init: Orthogonal initialisation of the default MLPs.
        log_std_init: Initial log σ (Box action spaces only).
        actor: A custom actor module ``obs -> mean or logits`` (replaces the MLP).
        critic: A custom critic module ``obs -> (N, 1) or (N,)`` (replaces the MLP).
        fast_paths: Use the plain-MLP fast paths where the networks allow them.
        observation_space: The env's observation space: with images, ``uint8`` data or a
            custom extractor, each default network is a feature extractor then the MLP.
        features_extractor: The extractor's name or ``"module:Class"`` (see
            :class:`~natgrad.rl.config.PolicyConfig`).
        features_dim: Output size of each CNN (0: its default).
        features_extractor_kwargs: More keyword arguments for the extractor.
        use_sde: gSDE (Box actions; an ``nn.Sequential`` actor ending in ``nn.Linear``, as
            the default MLP): ``log_std`` is then a ``(k, d)`` matrix, k the width of the
            actor's last hidden layer, and the action noise ``z(s) ε`` (SB3's ``use_sde``,
            with ``full_std=True``, ``learn_features=False``).
        sde_sample_freq: Steps each exploration matrix ε is held; -1: a whole rollout.

    Attributes:
        actor_spec, critic_spec: The :class:`~natgrad.mlp.MLPSpec` of each network when
            its fast path is on, else ``None``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: spaces.Space,
        *,
        policy_hidden: Sequence[int] = (64, 64),
        critic_hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        ortho_init: bool = True,
        log_std_init: float = 0.0,
        actor: nn.Module | None = None,
        critic: nn.Module | None = None,
        fast_paths: bool = True,
        observation_space: gym.Space | None = None,
        features_extractor: str = "auto",
        features_dim: int = 0,
        features_extractor_kwargs: dict | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
    ) -> None:
        super().__init__()
        self.kind, self.out_dim, self.nvec = kind_for_space(action_space)
        self.use_sde, self.sde_sample_freq = bool(use_sde), int(sde_sample_freq)
        self.action_space = action_space

        def network(hidden: Sequence[int], n_out: int, gain: float) -> nn.Module:
            layout = None if observation_space is None else obs_layout(observation_space)
            if layout is None or not needs_extractor(layout, features_extractor):
                return mlp(obs_dim, hidden, n_out, activation=activation,
                           ortho_init=ortho_init, out_gain=gain)  # fmt: skip
            if layout.dim != obs_dim:
                raise ValueError(f"obs_dim={obs_dim} but the observation space holds "
                                 f"{layout.dim} values")  # fmt: skip
            features = ObsFeatures(layout, features_extractor, features_dim,
                                   features_extractor_kwargs, ortho_init=ortho_init)  # fmt: skip
            head = mlp(features.features_dim, hidden, n_out, activation=activation,
                       ortho_init=ortho_init, out_gain=gain)  # fmt: skip
            return nn.Sequential(features, head)

        self.actor = actor if actor is not None else network(policy_hidden, self.out_dim, 0.01)
        self.critic = critic if critic is not None else network(critic_hidden, 1, 1.0)
        shape: tuple[int, ...] = (self.out_dim,)
        if self.use_sde:
            shape = (self._sde_latent_dim(action_space), self.out_dim)
        self.log_std = (
            nn.Parameter(torch.full(shape, float(log_std_init)))
            if self.kind == "gaussian"
            else None
        )
        self.fast_paths = fast_paths
        self.actor_spec = self._spec("actor", self.actor, custom=actor is not None)
        self.critic_spec = self._spec("critic", self.critic, custom=critic is not None)
        if self.critic_spec is not None and self.critic_spec.out_features != 1:
            self.critic_spec = None

    def _sde_latent_dim(self, action_space: spaces.Space) -> int:
        if self.kind != "gaussian":
            raise ValueError(
                f"use_sde=True needs a Box action space (gSDE perturbs continuous actions); "
                f"the action space is {action_space}"
            )
        last = self.actor[-1] if isinstance(self.actor, nn.Sequential) else None
        if not isinstance(last, nn.Linear) or len(self.actor) < 2:  # type: ignore[arg-type]
            raise ValueError(
                "use_sde=True needs an nn.Sequential actor ending in nn.Linear (the default "
                f"MLP is one): its input is gSDE's latent z; got {type(self.actor).__name__}"
            )
        return last.in_features

    def latent(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, z)``: the actor's output and the input of its last layer (gSDE)."""
        z = self.actor[:-1](obs)  # type: ignore[index]
        return self.actor[-1](z), z  # type: ignore[index]

    @classmethod
    def from_config(
        cls,
        obs_dim: int,
        action_space: spaces.Space,
        config: PolicyConfig,
        *,
        actor: nn.Module | None = None,
        critic: nn.Module | None = None,
        fast_paths: bool = True,
        observation_space: gym.Space | None = None,
    ) -> ActorCritic:
        """The actor-critic a :class:`~natgrad.rl.config.PolicyConfig` describes."""
        return cls(
            obs_dim, action_space, policy_hidden=config.policy_hidden,
            critic_hidden=config.critic_hidden, activation=config.activation,
            ortho_init=config.ortho_init, log_std_init=config.log_std_init,
            actor=actor, critic=critic, fast_paths=fast_paths,
            observation_space=observation_space,
            features_extractor=config.features_extractor, features_dim=config.features_dim,
            features_extractor_kwargs=config.features_extractor_kwargs,
            use_sde=config.use_sde, sde_sample_freq=config.sde_sample_freq,
        )  # fmt: skip

    def _spec(self, name: str, module: nn.Module, *, custom: bool) -> MLPSpec | None:
        if not self.fast_paths:
            return None
        spec = mlp_spec(module)
        if spec is None and custom:
            log.info(
                "natgrad: the custom %s (%s) is not a plain MLP (natgrad.mlp.mlp_spec): it "
                "uses the generic autograd path", name, type(module).__name__,
            )  # fmt: skip
        return spec

    def policy_parameters(self) -> list[Tensor]:
        """The tensors the natural step moves: the actor's parameters and log σ (or gSDE's
        log-std matrix)."""
        params: list[Tensor] = list(self.actor.parameters())
        return params + [self.log_std] if self.log_std is not None else params

    def critic_parameters(self) -> list[Tensor]:
        return list(self.critic.parameters())

    def distribution(self, obs: Tensor, action_masks: Tensor | None = None) -> Distribution:
        """The action distribution at ``obs`` (with autograd, unless called under no_grad);
        with ``action_masks`` (``(N, out_dim)`` bool, True = legal) the illegal logits are
        ``-inf``."""
        if self.use_sde:
            out, latent = self.latent(obs)
            return self.distribution_from_output(out, action_masks, latent=latent)
        return self.distribution_from_output(self.actor(obs), action_masks)

    def distribution_from_output(
        self, out: Tensor, action_masks: Tensor | None = None, *, latent: Tensor | None = None
    ) -> Distribution:
        """The distribution of the actor's output ``out`` (and, with gSDE, its ``latent``)."""
        if action_masks is not None:
            if self.kind not in ("categorical", "multicategorical"):
                raise ValueError(
                    f"action masks need Discrete or MultiDiscrete actions; this policy's "
                    f"actions are {self.kind!r} ({self.action_space})"
                )
            if action_masks.shape != out.shape or action_masks.dtype != torch.bool:
                raise ValueError(
                    f"action_masks has shape {tuple(action_masks.shape)} and dtype "
                    f"{action_masks.dtype}; expected {tuple(out.shape)} torch.bool"
                )
            out = out.masked_fill(~action_masks, float("-inf"))
        if self.kind == "gaussian":
            assert self.log_std is not None  # set in __init__ for Box spaces
            if self.use_sde:
                if latent is None:
                    raise ValueError("use_sde=True: pass the latent z (see ActorCritic.latent)")
                return StateDependentGaussian(out, self.log_std, latent.detach())
            return DiagGaussian(out, self.log_std)
        if self.kind == "categorical":
            return Categorical(out)
        if self.kind == "bernoulli":
            return Bernoulli(out)
        return MultiCategorical(out, self.nvec or [])

    def value(self, obs: Tensor) -> Tensor:
        """V(obs), shape ``(N,)``."""
        v = self.critic(obs)
        return v.reshape(v.shape[0]) if v.dim() > 1 else v

    def sampler(self) -> NumpyMLPSampler | TorchSampler:
        """A per-step sampler holding a copy of the current actor weights.

        Plain-MLP actors become a :class:`NumpyMLPSampler` (numpy, no autograd); other
        actors run in torch under ``inference_mode``.
        """
        std = None if self.log_std is None else self.log_std.detach().numpy().copy()
        log_std, sde_log_std = (None, std) if self.use_sde else (std, None)
        freq = self.sde_sample_freq
        if self.actor_spec is not None:
            return NumpyMLPSampler(self.actor_spec, self.kind, log_std=log_std, nvec=self.nvec,
                                   sde_log_std=sde_log_std, sde_sample_freq=freq)  # fmt: skip
        if self.fast_paths and not self.use_sde:
            from natgrad.rl.policies.cnn_sampler import cnn_numpy_sampler

            fast = cnn_numpy_sampler(self.actor, self.kind, log_std=log_std, nvec=self.nvec)
            if fast is not None:
                return fast
        return TorchSampler(
            _CopiedActor(self.actor, latent=self.use_sde), self.kind, self.out_dim,
            log_std=log_std, nvec=self.nvec, sde_log_std=sde_log_std, sde_sample_freq=freq,
        )  # fmt: skip

    def actions_to_tensor(self, actions: np.ndarray) -> Tensor:
        """Batch actions as the distribution's ``log_prob`` expects them."""
        t = torch.from_numpy(np.ascontiguousarray(actions))
        return t.float() if self.kind in ("gaussian", "bernoulli") else t.long()


class _CopiedActor:
    """A frozen deep copy of a custom actor, so that rollouts never see a half-updated policy."""

    def __init__(self, actor: nn.Module, *, latent: bool = False) -> None:
        import copy

        self.module = copy.deepcopy(actor).eval()
        self.with_latent = latent

    def __call__(self, obs: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.with_latent:  # gSDE: (mean, z), z the input of the last layer
            z = self.module[:-1](obs)  # type: ignore[index]
            return self.module[-1](z), z  # type: ignore[index]
        return self.module(obs)
