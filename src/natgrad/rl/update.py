"""One TRPO / NPG update on a batch, in the order of the paper.

    surrogate gradient → Fisher product → CG → scale to the KL radius
    → line search (TRPO) → accept, or restore exactly

followed by the critic's regression on the λ-returns.  The batch is already
flat (``B`` transitions) and holds torch tensors.
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
    supports_mlp_fisher,
)
from natgrad.linalg import (
    NaturalDirection,
    StepInfo,
    line_search,
    natural_direction,
    natural_step,
    scaled_direction,
)
from natgrad.params import flatten
from natgrad.rl.config import AgentConfig, TRPOConfig
from natgrad.rl.policies import ActorCritic

if TYPE_CHECKING:
    from natgrad.optim.kfac import KFAC


@dataclass(frozen=True)
class Batch:
    """A flat batch of ``B`` transitions for the update."""

    obs: Tensor
    actions: Tensor
    advantages: Tensor
    returns: Tensor
    values: Tensor


class _Forward:
    """The policy's distribution at the current parameters, computed once per parameter version.

    The line search asks for the loss and the KL at each trial point; both
    come from one forward pass, recomputed only when a parameter has changed.
    """

    def __init__(self, policy: ActorCritic, obs: Tensor) -> None:
        self.policy, self.obs = policy, obs
        self.params = policy.policy_parameters()
        self._key: tuple[int, ...] | None = None
        self._dist: Distribution | None = None

    def __call__(self) -> Distribution:
        key = tuple(p._version for p in self.params)
        if key != self._key or self._dist is None:
            with torch.no_grad():
                self._dist = self.policy.distribution(self.obs)
            self._key = key
        return self._dist


def policy_step(
    policy: ActorCritic,
    batch: Batch,
    cfg: AgentConfig,
    generator: torch.Generator,
    kfac: KFAC | None = None,
) -> tuple[StepInfo, dict[str, float]]:
    """The natural policy step (TRPO's if ``cfg`` is a :class:`TRPOConfig`, else NPG's).

    With ``cfg.fisher == "kfac"`` the direction is K-FAC's direct solve (an
    ACKTR-style step; ``kfac`` holds the factor averages across iterations)
    instead of CG on the exact Fisher.
    """
    params = policy.policy_parameters()
    adv = batch.advantages
    if cfg.normalize_advantage and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

    # 1. Surrogate loss L(θ) = −E[π_θ(a|s) / π_old(a|s) · A] and its gradient.
    if kfac is not None:
        with kfac.capture():
            dist = policy.distribution(batch.obs)
        kfac.update_factors(dist)  # factors from actions sampled from the policy itself
    else:
        dist = policy.distribution(batch.obs)
    old = dist.detach()
    old_log_prob = old.log_prob(batch.actions)
    ratio = torch.exp(dist.log_prob(batch.actions) - old_log_prob)
    loss = -(ratio * adv).mean()
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    grad = flatten(grads)

    # 2-4. The Fisher product (damped, optionally on a subsample) → CG → scale to max_kl;
    #      or K-FAC's solve, scaled the same way.
    forward = _Forward(policy, batch.obs)

    def surrogate() -> Tensor:
        d = forward()
        return -(torch.exp(d.log_prob(batch.actions) - old_log_prob) * adv).mean()

    def kl() -> Tensor:
        return old.kl(forward()).mean()

    if kfac is not None:
        direction = _kfac_direction(policy, kfac, list(grads), grad, cfg)
    else:
        fisher = _fisher(policy, dist, batch.obs, cfg, generator)
        direction = natural_direction(
            fisher.mv, grad, cfg.max_kl, cg_iters=cfg.cg_iters, cg_rtol=cfg.cg_rtol,
            cg_atol=cfg.cg_atol,
        )  # fmt: skip

    # 5-6. Line search → accept or restore (TRPO); the plain step of radius δ (NPG).
    l0 = float(loss.detach())
    if isinstance(cfg, TRPOConfig):
        info = line_search(
            params, direction, surrogate, kl, max_kl=cfg.max_kl,
            backtrack_ratio=cfg.line_search_shrink, max_backtracks=cfg.line_search_max_iter,
            loss_before=l0,
        )  # fmt: skip
    else:
        info = natural_step(
            params, grad, None, max_kl=cfg.max_kl, kl_fn=kl, loss_fn=surrogate,
            direction=direction,
        )  # fmt: skip
    stats = {
        "entropy": float(old.entropy().mean()),
        "kl": info.kl,
        "surrogate_improvement": info.improvement,
        "expected_improvement": info.expected_improvement,
        "line_search_steps": float(info.backtracks),
        "line_search_success": float(info.accepted),
        "cg_iterations": float(info.cg.iterations),
        "cg_residual": info.cg.residual_norm,
        "step_size": info.step_size,
    }
    return info, stats


def _kfac_direction(
    policy: ActorCritic, kfac: KFAC, grads: list[Tensor], grad: Tensor, cfg: AgentConfig
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


def make_kfac(policy: ActorCritic, cfg: AgentConfig) -> KFAC | None:
    """The K-FAC state for ``cfg.fisher == "kfac"`` (factors averaged across iterations)."""
    if cfg.fisher != "kfac":
        return None
    from natgrad.optim.kfac import KFAC

    return KFAC(policy.actor, damping=cfg.cg_damping, factor_decay=0.95, inverse_every=1,
                seed=cfg.seed)  # fmt: skip


def _fisher(
    policy: ActorCritic, dist: Distribution, obs: Tensor, cfg: AgentConfig, gen: torch.Generator
) -> FisherOperator:
    """The damped Fisher of the policy at θ_old, on the batch or a subsample of it.

    ``"ggn"`` on a plain MLP actor uses :class:`MLPFisher` (hand-linearised); other
    actors share the surrogate's forward pass through ``from_distribution``.
    """
    params = policy.policy_parameters()
    sub = obs if cfg.fisher_subsample >= 1.0 else subsample_batch(obs, cfg.fisher_subsample, gen)
    if cfg.fisher == "ggn" and supports_mlp_fisher(policy.actor):
        return MLPFisher(
            policy.actor,  # type: ignore[arg-type]
            sub,
            policy.distribution_from_output,
            log_std=policy.log_std,
            damping=cfg.cg_damping,
        )
    cls = KLHessianFisher if cfg.fisher == "kl_hessian" else GGNFisher
    if sub is obs:
        return cls.from_distribution(dist, params, damping=cfg.cg_damping)
    return cls.from_distribution(policy.distribution(sub), params, damping=cfg.cg_damping)


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """``1 − Var(returns − values) / Var(returns)``; NaN when the returns are constant."""
    var = returns.var()
    if not bool(var > 0):
        return float("nan")
    return float(1 - (returns - values).var() / var)
