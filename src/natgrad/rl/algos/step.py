"""The pieces of a natural policy step that TRPO and NPG share.

* :class:`Surrogate`: the surrogate loss of one batch, its gradient at θ_old and the
  KL to the old policy, each recomputed only when the parameters change;
* :func:`fisher_operator`: which Fisher (GGN or KL Hessian) and how it is computed
  (hand-linearised for plain MLPs, autograd otherwise), on the batch or a subsample;
* :func:`kfac_direction`: K-FAC's direct solve, for ``fisher="kfac"`` (ACKTR);
* :func:`explained_variance` of the critic.

The algorithms themselves (:mod:`~natgrad.rl.algos.trpo`, :mod:`~natgrad.rl.algos.npg`)
read in the order of their papers and call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.fisher import (
    FisherOperator,
    GGNFisher,
    KLHessianFisher,
    MLPFisher,
    subsample_batch,
)
from natgrad.linalg import NaturalDirection, StepInfo, scaled_direction
from natgrad.params import flatten
from natgrad.rl.config.algo import AlgoConfig
from natgrad.rl.policies.actor_critic import ActorCritic

if TYPE_CHECKING:
    from natgrad.optim.kfac import KFAC

__all__ = [
    "Batch",
    "Surrogate",
    "explained_variance",
    "fisher_operator",
    "kfac_direction",
    "make_kfac",
]


@dataclass(frozen=True)
class Batch:
    """A flat batch of ``B`` transitions for the update."""

    obs: Tensor
    actions: Tensor
    advantages: Tensor
    returns: Tensor
    values: Tensor
    action_masks: Tensor | None = None
    """``(B, M)`` bool legal actions from the rollout (or ``None``): the surrogate, the
    KL, the line search and the Fisher all use these."""


class Surrogate:
    """``L(θ) = −E[π_θ(a|s) / π_old(a|s) · A]`` on a batch, at θ_old and at trial points.

    On construction it runs the forward pass at θ_old (recording K-FAC's statistics when
    ``kfac`` is given) and the gradient ``g = ∇L(θ_old)``. :meth:`loss` and :meth:`kl`
    are what a line search asks for at each trial point; both come from one forward
    pass, recomputed only when a parameter has changed.

    Attributes:
        params: The tensors the step moves (the actor's parameters and log σ).
        dist: The distribution at θ_old, with its autograd graph (for Fisher operators).
        old: The same, detached: π_old.
        grads, grad: ``g`` per parameter and flat.
        loss_before: ``L(θ_old)``.
    """

    def __init__(
        self,
        policy: ActorCritic,
        batch: Batch,
        *,
        normalize_advantage: bool,
        kfac: KFAC | None = None,
        kfac_subsample: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.policy, self.obs, self.actions = policy, batch.obs, batch.actions
        self.masks = batch.action_masks
        self.params = policy.policy_parameters()
        adv = batch.advantages
        if normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        self.adv = adv
        if kfac is not None and kfac_subsample >= 1.0:
            with kfac.capture():
                dist = policy.distribution(batch.obs, self.masks)
            kfac.update_factors(dist)  # factors from actions sampled from the policy itself
        else:
            dist = policy.distribution(batch.obs, self.masks)
        if kfac is not None and kfac_subsample < 1.0:
            # K-FAC's statistics from a random subset of the rows: its own forward, so the
            # factor products cost O(subset) (bench/minatar_trpo.py speed)
            rows = (batch.obs,) if self.masks is None else (batch.obs, self.masks)
            sub = subsample_batch(rows, kfac_subsample, generator)
            with kfac.capture():
                sub_dist = policy.distribution(sub[0], sub[1] if len(sub) > 1 else None)
            kfac.update_factors(sub_dist)
        self.dist, self.old = dist, dist.detach()
        self.old_log_prob = self.old.log_prob(batch.actions)
        ratio = torch.exp(dist.log_prob(batch.actions) - self.old_log_prob)
        loss = -(ratio * adv).mean()
        self.grads = list(torch.autograd.grad(loss, self.params, retain_graph=True))
        self.grad = flatten(self.grads)
        self.loss_before = float(loss.detach())
        self._key: tuple[int, ...] | None = None
        self._current: Distribution | None = None

    def _forward(self) -> Distribution:
        key = tuple(p._version for p in self.params)
        if key != self._key or self._current is None:
            with torch.no_grad():
                self._current = self.policy.distribution(self.obs, self.masks)
            self._key = key
        return self._current

    def loss(self) -> Tensor:
        """``L`` at the current parameters."""
        d = self._forward()
        return -(torch.exp(d.log_prob(self.actions) - self.old_log_prob) * self.adv).mean()

    def kl(self) -> Tensor:
        """Mean ``KL(π_old ‖ π_θ)`` at the current parameters."""
        return self.old.kl(self._forward()).mean()

    def stats(self, info: StepInfo) -> dict[str, float]:
        """The step's metrics for the logs."""
        return {
            "entropy": float(self.old.entropy().mean()),
            "kl": info.kl,
            "surrogate_improvement": info.improvement,
            "expected_improvement": info.expected_improvement,
            "line_search_steps": float(info.backtracks),
            "line_search_success": float(info.accepted),
            "cg_iterations": float(info.cg.iterations),
            "cg_residual": info.cg.residual_norm,
            "step_size": info.step_size,
        }


def kfac_direction(
    policy: ActorCritic, kfac: KFAC, grads: list[Tensor], grad: Tensor, cfg: AlgoConfig
) -> NaturalDirection:
    """``x = F̂⁻¹g`` with K-FAC on the actor's layers and the exact Fisher on log σ.

    The Fisher of a state-independent log σ is exactly 2 per dimension (its
    output-space Fisher, averaged over the batch), so that block is solved exactly.
    """
    n_actor = len(kfac.params)
    xs, quad = kfac.solve_quad(grads[:n_actor], params=list(policy.actor.parameters()))
    xfx = float(quad)
    if policy.log_std is not None:
        g_std = grads[n_actor]
        x_std = g_std / (2.0 + cfg.cg_damping)
        xs = [*xs, x_std]
        xfx += float(2.0 * (x_std * x_std).sum())
    x = flatten(xs)
    return scaled_direction(x, xfx, grad, cfg.max_kl)


def make_kfac(policy: ActorCritic, cfg: AlgoConfig, seed: int) -> KFAC | None:
    """The K-FAC state for ``cfg.fisher == "kfac"`` (factors averaged across iterations)."""
    if cfg.fisher != "kfac":
        return None
    if policy.use_sde:
        raise ValueError(
            "fisher='kfac' does not support use_sde=True (K-FAC knows the Fisher of a "
            "state-independent log σ only); use fisher='ggn' with gSDE"
        )
    from natgrad.optim.kfac import KFAC

    return KFAC(policy.actor, damping=cfg.cg_damping, factor_decay=0.95,
                inverse_every=cfg.kfac_inverse_every, seed=seed)  # fmt: skip


def fisher_operator(
    policy: ActorCritic,
    dist: Distribution,
    obs: Tensor,
    cfg: AlgoConfig,
    gen: torch.Generator,
    masks: Tensor | None = None,
) -> FisherOperator:
    """The damped Fisher of the policy at θ_old, on the batch or a subsample of it.

    ``"ggn"`` on a plain MLP actor (with fast paths on) uses :class:`MLPFisher`
    (hand-linearised); other actors share the surrogate's forward pass through
    ``from_distribution``. With action ``masks`` it is the Fisher of the masked policy
    (zero on the illegal logits), the same rows subsampled.
    """
    params = policy.policy_parameters()
    sub_obs, sub_masks = obs, masks
    if cfg.fisher_subsample < 1.0:  # the same rows of the observations and the masks
        if masks is None:
            sub_obs = subsample_batch(obs, cfg.fisher_subsample, gen)
        else:
            sub_obs, sub_masks = subsample_batch((obs, masks), cfg.fisher_subsample, gen)
    if cfg.fisher == "ggn" and policy.actor_spec is not None:

        def make_dist(out: Tensor, latent: Tensor | None = None) -> Distribution:
            return policy.distribution_from_output(out, sub_masks, latent=latent)

        return MLPFisher(
            policy.actor,  # type: ignore[arg-type]
            sub_obs,
            make_dist,
            log_std=policy.log_std,
            damping=cfg.cg_damping,
            with_latent=policy.use_sde,
        )
    cls = KLHessianFisher if cfg.fisher == "kl_hessian" else GGNFisher
    if sub_obs is obs:
        return cls.from_distribution(dist, params, damping=cfg.cg_damping)
    sub_dist = policy.distribution(sub_obs, sub_masks)
    return cls.from_distribution(sub_dist, params, damping=cfg.cg_damping)


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """``1 − Var(returns − values) / Var(returns)``; NaN when the returns are constant."""
    var = returns.var()
    if not bool(var > 0):
        return float("nan")
    return float(1 - (returns - values).var() / var)
