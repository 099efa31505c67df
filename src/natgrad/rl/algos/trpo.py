"""Trust Region Policy Optimisation (Schulman et al., 2015).

The update, in the order of the paper::

    surrogate gradient g → Fisher products → CG: x ≈ F⁻¹g → scale x to the KL radius
    → backtracking line search on the surrogate under KL ≤ δ → accept, or restore θ_old

>>> from natgrad.rl import TRPO
>>> model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0, use_preset=False)
>>> model.learn(128).num_timesteps
128
>>> model.close()
"""

from __future__ import annotations

from natgrad.linalg import StepInfo, line_search
from natgrad.rl.algos.base import OnPolicyAlgorithm
from natgrad.rl.algos.step import Batch, Surrogate
from natgrad.rl.config import TRPOConfig

__all__ = ["TRPO"]


class TRPO(OnPolicyAlgorithm):
    """TRPO: the largest natural step whose KL to the old policy stays inside ``max_kl``.

    The arguments are :class:`~natgrad.rl.algos.base.OnPolicyAlgorithm`'s; the algorithm's
    settings are :class:`~natgrad.rl.TRPOConfig`'s fields.
    """

    config_class = TRPOConfig
    algo = "trpo"
    config: TRPOConfig

    def policy_step(self, batch: Batch) -> tuple[StepInfo, dict[str, float]]:
        cfg = self.config
        # 1. The surrogate L(θ) = −E[π_θ(a|s) / π_old(a|s) · A] and its gradient g at θ_old.
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
        # 5-6. Backtrack on L while KL ≤ max_kl and L improves → accept, or restore θ_old.
        info = line_search(
            problem.params, direction, problem.loss, problem.kl, max_kl=cfg.max_kl,
            backtrack_ratio=cfg.line_search_shrink, max_backtracks=cfg.line_search_max_iter,
            loss_before=problem.loss_before,
        )  # fmt: skip
        return info, problem.stats(info)
