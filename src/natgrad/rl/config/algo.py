"""The algorithm's settings: one dataclass per algorithm (TRPO, NPG), fields shared above.

>>> TRPOConfig().max_kl, NPGConfig(max_kl=0.05).max_kl
(0.01, 0.05)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natgrad.rl.config.base import ConfigBase, _bad, _choice, _positive_int

__all__ = ["ALGO_CONFIGS", "AlgoConfig", "NPGConfig", "TRPOConfig"]


@dataclass
class AlgoConfig(ConfigBase):
    """Fields shared by TRPO and NPG: the batch, advantages, the natural step, the critic."""

    n_steps: int = 2048
    """Steps per env per iteration; a batch holds n_steps × n_envs transitions."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float = 0.95
    """λ of generalised advantage estimation, in [0, 1]."""
    normalize_advantage: bool = True
    """Standardise advantages over the batch before the policy step."""
    max_kl: float = 0.01
    """Trust-region radius δ: the mean KL(old ‖ new) a step may reach."""
    cg_iters: int = 15
    """Conjugate-gradient iterations per policy step."""
    cg_damping: float = 0.1
    """Damping λ of the Fisher in CG: (F + λI) x = g."""
    cg_rtol: float = 1e-10
    """CG stops early once its residual ‖r‖ ≤ cg_rtol·‖g‖ (or cg_atol is reached)."""
    cg_atol: float = 1e-5
    """CG stops early once its residual ‖r‖ ≤ cg_atol; 1e-5 matches sb3-contrib's
    residual_tol = 1e-10 on ‖r‖²."""
    fisher: str = "ggn"
    """The metric of the step: "ggn" (exact Fisher products Jᵀ F_out J, linearised once),
    "kl_hessian" (exact, by double backprop: the reference) or "kfac" (K-FAC's
    Kronecker-factored Fisher solved directly, no CG: an ACKTR-style step)."""
    fisher_subsample: float = 1.0
    """Fraction of the batch used for Fisher products (with fisher="kfac": for K-FAC's
    factor statistics), in (0, 1]."""
    kfac_inverse_every: int = 1
    """With fisher="kfac": recompute the damped factor inverses every this many updates
    (kfac-pytorch's inv_update_steps); the factors themselves are updated every time."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    n_critic_updates: int = 10
    """Epochs of critic regression per iteration."""
    batch_size: int = 128
    """Minibatch size of the critic regression."""
    normalize_obs: bool = False
    """Running observation normalisation (statistics frozen within an iteration)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    clip_obs: float = 10.0
    """With normalize_obs, clip normalised observations to [-clip_obs, clip_obs]."""
    fast_paths: bool = True
    """Use the hand-written paths for plain MLPs (numpy rollout sampler, hand-linearised
    Fisher, numpy critic fit); False runs the generic autograd path everywhere. Results
    agree to float32 rounding."""

    algo: str = field(default="", init=False, repr=False)

    def validate(self) -> None:
        """Raise ``ValueError`` for the first field outside its allowed range."""
        super().validate()
        _positive_int(self, "n_steps", "cg_iters", "batch_size", "n_critic_updates")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _bad(name, getattr(self, name), "a number in [0, 1]")
        for name in ("max_kl", "critic_lr", "clip_obs"):
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "a finite number > 0")
        if not self.cg_damping >= 0:
            _bad("cg_damping", self.cg_damping, "a finite number >= 0 (0.1 is usual)")
        for name in ("cg_rtol", "cg_atol"):
            if not getattr(self, name) >= 0:
                _bad(name, getattr(self, name), "a number >= 0")
        if not 0.0 < self.fisher_subsample <= 1.0:
            _bad("fisher_subsample", self.fisher_subsample, "a fraction in (0, 1]")
        _choice(self, "fisher", ("ggn", "kl_hessian", "kfac"))
        every = self.kfac_inverse_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            _bad("kfac_inverse_every", every, "an int >= 1")


@dataclass
class TRPOConfig(AlgoConfig):
    """Trust Region Policy Optimisation (Schulman et al., 2015): a line-searched natural step."""

    line_search_shrink: float = 0.8
    """Backtracking factor of the line search, in (0, 1)."""
    line_search_max_iter: int = 10
    """Trial points of the line search before the step is rejected (parameters restored)."""

    algo: str = field(default="trpo", init=False, repr=False)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.line_search_shrink < 1:
            _bad("line_search_shrink", self.line_search_shrink, "a number in (0, 1)")
        _positive_int(self, "line_search_max_iter")


@dataclass
class NPGConfig(AlgoConfig):
    """Natural Policy Gradient (Kakade, 2001): the natural step of fixed KL radius, no line search."""

    algo: str = field(default="npg", init=False, repr=False)


ALGO_CONFIGS: dict[str, type[AlgoConfig]] = {"trpo": TRPOConfig, "npg": NPGConfig}
