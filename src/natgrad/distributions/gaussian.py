"""Diagonal Gaussian with parameters (mean, log σ), as in the seed article."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from natgrad.distributions.base import (
    Distribution,
    NonFiniteError,
    as_tensor_param,
    check_finite,
    check_same_family,
    check_tangents,
    check_value_shape,
    holds,
)

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagGaussian(Distribution):
    """Independent Gaussians over the last dimension: ``N(mean, diag(exp(log_std)²))``.

    Args:
        mean: Tensor ``(*batch, d)``.
        log_std: Tensor broadcastable to ``mean`` (a state-independent ``(d,)``
            vector is the usual policy choice); it is expanded to ``mean``'s shape.

    Raises:
        NonFiniteError: ``mean`` or ``log_std`` holds NaN or ±inf, or ``|log_std|``
            is so large that ``σ²`` or ``1/σ²`` overflows the dtype (about 44 in
            float32, 354 in float64).  A ``ValueError`` naming the tensor.

    The output-space Fisher in ``(mean, log_std)`` coordinates is diagonal:
    ``1/σ²`` on each mean and ``2`` on each log σ.

    >>> d = DiagGaussian(torch.zeros(1, 1), torch.zeros(1, 1))
    >>> d.fisher_mv([torch.ones(1, 1), torch.ones(1, 1)])
    (tensor([[1.]]), tensor([[2.]]))
    """

    def __init__(self, mean: Tensor, log_std: Tensor) -> None:
        mean = as_tensor_param("mean", mean)
        log_std = as_tensor_param("log_std", log_std)
        if mean.dim() < 1:
            raise ValueError(
                "mean must have at least one dimension (the event dimension), got a scalar; "
                "use mean.reshape(1) for a single 1-d Gaussian"
            )
        try:
            log_std = log_std.expand_as(mean)
        except RuntimeError:
            raise ValueError(
                f"log_std of shape {tuple(log_std.shape)} does not broadcast to mean's shape "
                f"{tuple(mean.shape)}"
            ) from None
        check_finite("mean", mean)
        check_finite("log_std", log_std, "; clamp it, e.g. log_std.clamp(-20, 2)")
        limit = 0.5 * math.log(torch.finfo(log_std.dtype).max)
        if not holds(log_std.detach().abs() < limit):
            raise NonFiniteError(
                f"log_std has entries outside (-{limit:.2f}, {limit:.2f}), where σ² or 1/σ² "
                f"overflows {log_std.dtype}; clamp it, e.g. log_std.clamp(-20, 2)"
            )
        self.mean = mean
        self.log_std = log_std

    @property
    def params(self) -> tuple[Tensor, Tensor]:
        return (self.mean, self.log_std)

    def with_params(self, params: Sequence[Tensor]) -> DiagGaussian:
        mean, log_std = params
        return DiagGaussian(mean, log_std)

    @property
    def batch_shape(self) -> torch.Size:
        return self.mean.shape[:-1]

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(generator)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + self.std * noise

    def log_prob(self, value: Tensor) -> Tensor:
        check_value_shape("value", value, self.mean.shape[-1:], self.batch_shape)
        if not holds(torch.isfinite(value.detach())):
            raise ValueError("value contains NaN or inf; a Gaussian's values must be finite")
        z = (value - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (self.log_std + _HALF_LOG_2PI_E).sum(-1)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self, other: Distribution) -> Tensor:
        check_same_family(self, other)
        other = cast(DiagGaussian, other)
        # The seed's gauss_KL: log σ2 − log σ1 + (σ1² + (μ1 − μ2)²) / (2σ2²) − ½, summed.
        var_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = (self.mean - other.mean).square() * torch.exp(-2 * other.log_std)
        return (other.log_std - self.log_std + 0.5 * (var_ratio + mean_term) - 0.5).sum(-1)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        d_mean, d_log_std = check_tangents(self, tangents)
        return d_mean * torch.exp(-2 * self.log_std), 2.0 * d_log_std
