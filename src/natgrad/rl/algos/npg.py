"""Natural Policy Gradient (Kakade, 2001), with the step length set by a KL radius.

The update, in the order of the paper::

    surrogate gradient g → Fisher products → CG: x ≈ F⁻¹g → step θ + β x, β chosen so
    that the quadratic model of the KL equals δ (no line search)
"""

from __future__ import annotations

from natgrad.linalg import StepInfo, natural_step
from natgrad.rl.algos.base import OnPolicyAlgorithm
from natgrad.rl.algos.step import Batch, Surrogate
from natgrad.rl.config import NPGConfig

__all__ = ["NPG"]


class NPG(OnPolicyAlgorithm):
    """NPG: the natural step of fixed KL radius ``max_kl``, taken without a line search.

    The arguments are :class:`~natgrad.rl.algos.base.OnPolicyAlgorithm`'s; the algorithm's
    settings are :class:`~natgrad.rl.NPGConfig`'s fields.
    """

    config_class = NPGConfig
    algo = "npg"
    config: NPGConfig

    def policy_step(self, batch: Batch) -> tuple[StepInfo, dict[str, float]]:
        cfg = self.config
        # 1. The surrogate L(θ) and its gradient g at θ_old.
        problem = Surrogate(
            self.policy,
            batch,
            normalize_advantage=cfg.normalize_advantage,
            kfac=self.kfac,
            kfac_subsample=cfg.fisher_subsample,
            generator=self.generator,
        )
        # 2-4. Fisher products → CG → x ≈ (F + λI)⁻¹g, scaled so that ½ xᵀFx = max_kl.
        direction = self.natural_direction(problem)
        # 5. Take it (the KL and the improvement reached are reported, not enforced).
        info = natural_step(
            problem.params, problem.grad, None, max_kl=cfg.max_kl, kl_fn=problem.kl,
            loss_fn=problem.loss, direction=direction,
        )  # fmt: skip
        return info, problem.stats(info)
