"""One TRPO / NPG update on a batch, in the order of the paper.

    surrogate gradient → Fisher product → CG → scale to the KL radius
    → line search (TRPO) → accept, or restore exactly

followed by the critic's regression on the λ-returns.  The batch is already
flat (``B`` transitions) and holds torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.fisher import GGNFisher, KLHessianFisher, subsample_batch
from natgrad.linalg import StepInfo, natural_step, trust_region_step
from natgrad.params import flatten
from natgrad.rl.config import AgentConfig, TRPOConfig
from natgrad.rl.policies import ActorCritic


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
    policy: ActorCritic, batch: Batch, cfg: AgentConfig, generator: torch.Generator
) -> tuple[StepInfo, dict[str, float]]:
    """The natural policy step (TRPO's if ``cfg`` is a :class:`TRPOConfig`, else NPG's)."""
    params = policy.policy_parameters()
    adv = batch.advantages
    if cfg.normalize_advantage and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

    # 1. Surrogate loss L(θ) = −E[π_θ(a|s) / π_old(a|s) · A] and its gradient.
    dist = policy.distribution(batch.obs)
    old = dist.detach()
    old_log_prob = old.log_prob(batch.actions)
    ratio = torch.exp(dist.log_prob(batch.actions) - old_log_prob)
    loss = -(ratio * adv).mean()
    grad = flatten(torch.autograd.grad(loss, params, retain_graph=True))

    # 2. The Fisher product (damped, optionally on a subsample), sharing this forward.
    fisher = _fisher(policy, dist, batch.obs, cfg, generator)

    # 3-6. CG → scale to max_kl → line search → accept or restore.
    forward = _Forward(policy, batch.obs)

    def surrogate() -> Tensor:
        d = forward()
        return -(torch.exp(d.log_prob(batch.actions) - old_log_prob) * adv).mean()

    def kl() -> Tensor:
        return old.kl(forward()).mean()

    if isinstance(cfg, TRPOConfig):
        info = trust_region_step(
            params, grad, fisher.mv, surrogate, kl,
            max_kl=cfg.max_kl, cg_iters=cfg.cg_iters, cg_rtol=cfg.cg_rtol, cg_atol=cfg.cg_atol,
            backtrack_ratio=cfg.line_search_shrink, max_backtracks=cfg.line_search_max_iter,
            loss_before=float(loss.detach()),
        )  # fmt: skip
    else:
        info = natural_step(
            params, grad, fisher.mv, max_kl=cfg.max_kl, cg_iters=cfg.cg_iters,
            cg_rtol=cfg.cg_rtol, cg_atol=cfg.cg_atol, kl_fn=kl, loss_fn=surrogate,
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


def _fisher(
    policy: ActorCritic, dist: Distribution, obs: Tensor, cfg: AgentConfig, gen: torch.Generator
) -> GGNFisher | KLHessianFisher:
    params = policy.policy_parameters()
    cls = GGNFisher if cfg.fisher == "ggn" else KLHessianFisher
    if cfg.fisher_subsample >= 1.0:
        return cls.from_distribution(dist, params, damping=cfg.cg_damping)
    sub = subsample_batch(obs, cfg.fisher_subsample, gen)
    return cls.from_distribution(policy.distribution(sub), params, damping=cfg.cg_damping)


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """``1 − Var(returns − values) / Var(returns)``; NaN when the returns are constant."""
    var = returns.var()
    if not bool(var > 0):
        return float("nan")
    return float(1 - (returns - values).var() / var)
