"""Independent Bernoullis on logits (a ``MultiBinary`` action)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from natgrad.distributions.base import Distribution, as_tensor_param, check_same_family


class Bernoulli(Distribution):
    """Independent Bernoullis over the last dimension of ``logits``.

    ``log_prob``, ``entropy`` and ``kl`` sum over the last dimension.  The
    output-space Fisher on logits is diagonal, ``p(1 − p)``.

    >>> Bernoulli(torch.zeros(1, 1)).fisher_mv([torch.ones(1, 1)])
    (tensor([[0.2500]]),)
    """

    def __init__(self, logits: Tensor) -> None:
        logits = as_tensor_param("logits", logits)
        if logits.dim() < 1:
            raise ValueError(
                "logits must have at least one dimension (the event dimension), got a scalar"
            )
        self.logits = logits

    @property
    def params(self) -> tuple[Tensor]:
        return (self.logits,)

    def with_params(self, params: Sequence[Tensor]) -> Bernoulli:
        (logits,) = params
        return Bernoulli(logits)

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            u = torch.rand(
                self.logits.shape,
                generator=generator,
                dtype=self.logits.dtype,
                device=self.logits.device,
            )
            return (u < self.probs).to(self.logits.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        return (value * self.logits - F.softplus(self.logits)).sum(-1)

    def entropy(self) -> Tensor:
        p = self.probs
        return (F.softplus(self.logits) - p * self.logits).sum(-1)

    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def kl(self, other: Distribution) -> Tensor:
        check_same_family(self, other)
        other = cast(Bernoulli, other)
        p = self.probs
        a, b = self.logits, other.logits
        # log p/q = logsigmoid(a) - logsigmoid(b); log (1-p)/(1-q) = logsigmoid(-a) - logsigmoid(-b)
        pos = F.logsigmoid(a) - F.logsigmoid(b)
        neg = F.logsigmoid(-a) - F.logsigmoid(-b)
        return (p * pos + (1 - p) * neg).sum(-1)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor]:
        (u,) = tangents
        p = self.probs
        return (p * (1 - p) * u,)
