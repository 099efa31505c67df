"""The state-dependent Gaussian of generalised state-dependent exploration (gSDE).

gSDE (Raffin, Kober & Stulp, "Smooth Exploration for Robotic Reinforcement
Learning", CoRL 2022) perturbs the action with noise that is a linear function of
the policy's latent features ``z(s)`` (the last hidden layer, with the gradient
stopped): ``a = μ(s) + z(s) ε`` with an exploration matrix ``ε`` of shape
``(k, d)``, ``ε_ij ~ N(0, σ_ij²)``, ``σ_ij = exp(L_ij)``.  The matrix is held for
several steps (``sde_sample_freq``), so the exploration is smooth in time; at each
step the action's law given ``s`` is still a diagonal Gaussian, with a per-state
standard deviation

    σ_j(s)² = Σ_i z_i(s)² exp(2 L_ij) + ε_num,

(ε_num = 1e-6, as in Stable-Baselines3's ``StateDependentNoiseDistribution``), and
this is the distribution whose log-probabilities, KL and Fisher TRPO uses.

Output-space Fisher, in the coordinates ``(μ, L)`` with ``z`` fixed: per sample,
``1/σ_j²`` on each mean and, on the matrix,

    F_L[ij, i'j'] = 2 w_ij w_i'j δ_jj',   w_ij = z_i² exp(2 L_ij) / σ_j²,

since ``∂ log σ_j / ∂L_ij = w_ij`` and the Fisher of ``log σ_j`` is 2: one
rank-one block per action dimension.  It is exact when ``z`` carries no gradient
to the parameters (sb3's default ``learn_features=False``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from natgrad.distributions.base import Distribution, as_tensor_param, check_same_family

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
SDE_EPSILON = 1e-6


class StateDependentGaussian(Distribution):
    """gSDE's action distribution: ``N(μ(s), diag(σ(s)²))``, ``σ_j² = Σ_i z_i² e^{2L_ij} + ε``.

    Args:
        mean: Tensor ``(*batch, d)``, the mean actions.
        log_std: The exploration log-std matrix ``L``, ``(k, d)`` (or ``(k, 1)`` for
            one column shared by every action, sb3's ``full_std=False``), or already
            expanded to ``(*batch, k, d)``.
        latent: The latent features ``z``, ``(*batch, k)``, without gradient.
        epsilon: Added to each variance (sb3's 1e-6), > 0.

    The parameters (``params``, the output-space coordinates) are ``(mean, log_std)``,
    the matrix expanded to ``(*batch, k, d)``; ``latent`` is fixed structure.

    >>> p = StateDependentGaussian(torch.zeros(1, 1), torch.zeros(2, 1), torch.ones(1, 2))
    >>> p.std  # sqrt(1 + 1 + 1e-6)
    tensor([[1.4142]])
    """

    def __init__(
        self, mean: Tensor, log_std: Tensor, latent: Tensor, *, epsilon: float = SDE_EPSILON
    ) -> None:
        mean = as_tensor_param("mean", mean)
        log_std = as_tensor_param("log_std", log_std)
        latent = as_tensor_param("latent", latent)
        if mean.dim() < 1 or latent.dim() < 1:
            raise ValueError(
                f"mean {tuple(mean.shape)} and latent {tuple(latent.shape)} need an event "
                "dimension: mean (*batch, d), latent (*batch, k)"
            )
        if latent.shape[:-1] != mean.shape[:-1]:
            raise ValueError(
                f"latent of shape {tuple(latent.shape)} and mean of shape {tuple(mean.shape)} "
                "must share their batch dimensions: latent (*batch, k), mean (*batch, d)"
            )
        if latent.requires_grad:
            raise ValueError(
                "latent requires grad; gSDE's features enter the std without gradient "
                "(sb3's learn_features=False), pass latent.detach()"
            )
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon={epsilon!r}; it must be a finite number > 0 (1e-6)")
        shape = (*mean.shape[:-1], latent.shape[-1], mean.shape[-1])
        try:
            log_std = log_std.expand(shape)
        except RuntimeError:
            raise ValueError(
                f"log_std of shape {tuple(log_std.shape)} does not broadcast to (k, d) = "
                f"{shape[-2:]} (latent has k={latent.shape[-1]}, mean has d={mean.shape[-1]})"
            ) from None
        self.mean, self.log_std, self.latent, self.epsilon = mean, log_std, latent, epsilon
        self._fisher_cache: tuple[Tensor, Tensor] | None = None

    # --- structure ------------------------------------------------------------------
    @property
    def params(self) -> tuple[Tensor, Tensor]:
        return (self.mean, self.log_std)

    def with_params(self, params: Sequence[Tensor]) -> StateDependentGaussian:
        mean, log_std = params
        return StateDependentGaussian(mean, log_std, self.latent, epsilon=self.epsilon)

    def __getitem__(self, index: object) -> StateDependentGaussian:
        return StateDependentGaussian(
            self.mean[index],  # type: ignore[index]
            self.log_std[index],  # type: ignore[index]
            self.latent[index],  # type: ignore[index]
            epsilon=self.epsilon,
        )

    @property
    def batch_shape(self) -> torch.Size:
        return self.mean.shape[:-1]

    # --- the per-state Gaussian -------------------------------------------------------
    @property
    def variance(self) -> Tensor:
        """``σ_j(s)² = Σ_i z_i² exp(2 L_ij) + ε``, shape ``(*batch, d)``."""
        z2 = self.latent.square().unsqueeze(-1)
        return (z2 * torch.exp(2 * self.log_std)).sum(-2) + self.epsilon

    @property
    def std(self) -> Tensor:
        return self.variance.sqrt()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A draw from the per-state law (a fresh exploration matrix for every sample)."""
        with torch.no_grad():
            return self.rsample(generator)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + self.std * noise

    def log_prob(self, value: Tensor) -> Tensor:
        var = self.variance
        return (-0.5 * (value - self.mean).square() / var - 0.5 * var.log() - _HALF_LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 * self.variance.log() + _HALF_LOG_2PI_E).sum(-1)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self, other: Distribution) -> Tensor:
        """``KL(self ‖ other)`` of the per-state Gaussians (both must share ``latent``)."""
        check_same_family(self, other)
        other = cast(StateDependentGaussian, other)
        v1, v2 = self.variance, other.variance
        return (0.5 * (v2.log() - v1.log()) + 0.5 * (v1 + (self.mean - other.mean).square()) / v2
                - 0.5).sum(-1)  # fmt: skip

    def weights(self) -> Tensor:
        """``w_ij = ∂ log σ_j / ∂ L_ij = z_i² exp(2 L_ij) / σ_j²``, shape ``(*batch, k, d)``."""
        z2 = self.latent.square().unsqueeze(-1)
        return z2 * torch.exp(2 * self.log_std) / self.variance.unsqueeze(-2)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        d_mean, d_log_std = tangents
        cache = self._fisher_cache
        if cache is None:
            cache = (self.variance.reciprocal(), self.weights())
            if not (self.mean.requires_grad or self.log_std.requires_grad):
                self._fisher_cache = cache  # a frozen point: kept for CG's next products
        inv_var, w = cache
        d_log_sigma = (w * d_log_std).sum(-2, keepdim=True)  # the jvp into log σ_j
        return d_mean * inv_var, 2.0 * w * d_log_sigma

    # --- the exploration noise -------------------------------------------------------
    def exploration_matrices(
        self, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``ε ~ N(0, exp(L)²)``: one ``(k, d)`` matrix, or ``(n, k, d)`` for ``n`` envs.

        Uses the matrix of the first batch element (``L`` is shared by the batch).
        """
        log_std = self.log_std.reshape(-1, *self.log_std.shape[-2:])[0]
        shape = log_std.shape if n is None else (n, *log_std.shape)
        noise = torch.randn(shape, generator=generator, dtype=log_std.dtype, device=log_std.device)
        return noise * log_std.exp()

    def noisy_action(self, matrices: Tensor) -> Tensor:
        """``μ + z ε``: the action with held exploration matrices (``(k, d)`` or per row)."""
        if matrices.dim() == 2:
            return self.mean + self.latent @ matrices
        return self.mean + (self.latent.unsqueeze(-2) @ matrices).squeeze(-2)
