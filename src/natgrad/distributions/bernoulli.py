"""Independent Bernoullis on logits (a ``MultiBinary`` action).

A logit of ``±inf`` is a certain outcome (probability 1 or 0) and is
accepted: ``log_prob``, ``entropy``, ``kl`` and ``fisher_mv`` take their
limits there (0·log 0 = 0), never NaN.  ``log_prob`` of the impossible
outcome is ``-inf`` and ``KL(p ‖ q)`` is ``+inf`` when ``q`` rules out an
outcome that ``p`` allows.  A NaN logit is refused at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from natgrad.distributions.base import (
    Distribution,
    NonFiniteError,
    as_tensor_param,
    check_same_family,
    check_tangents,
    check_value_shape,
    holds,
)


def _xlogy_free(weight: Tensor, log_term: Tensor) -> Tensor:
    """``weight · log_term`` with ``0 · (−inf) = 0`` and a finite gradient there."""
    off = weight == 0
    return weight * log_term.masked_fill(off, 0.0)


class Bernoulli(Distribution):
    """Independent Bernoullis over the last dimension of ``logits``.

    ``log_prob``, ``entropy`` and ``kl`` sum over the last dimension.  The
    output-space Fisher on logits is diagonal, ``p(1 − p)``.

    >>> Bernoulli(torch.zeros(1, 1)).fisher_mv([torch.ones(1, 1)])
    (tensor([[0.2500]]),)
    >>> Bernoulli(torch.tensor([[float("inf"), 0.0]])).entropy()  # 0 + log 2
    tensor([0.6931])
    """

    def __init__(self, logits: Tensor) -> None:
        logits = as_tensor_param("logits", logits)
        if logits.dim() < 1:
            raise ValueError(
                "logits must have at least one dimension (the event dimension), got a scalar"
            )
        if not holds(~torch.isnan(logits.detach())):
            raise NonFiniteError("logits contains NaN; Bernoulli logits must be numbers (±inf ok)")
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

    def _log_sigmoids(self) -> tuple[Tensor, Tensor]:
        """``(log p, log(1 − p))``: ``logsigmoid(±logits)``, exact at ±inf."""
        return F.logsigmoid(self.logits), F.logsigmoid(-self.logits)

    def log_prob(self, value: Tensor) -> Tensor:
        """``Σ log p(value)`` over the event; ``value`` holds 0s and 1s.

        Raises:
            ValueError: ``value`` holds anything but 0 and 1, or has the wrong shape.
        """
        check_value_shape("value", value, self.logits.shape[-1:], self.batch_shape)
        if not holds((value == 0) | (value == 1)):
            raise ValueError(
                "value must hold outcomes 0 and 1 only (a MultiBinary action); got other "
                "numbers (a probability is not an outcome)"
            )
        log_p, log_q = self._log_sigmoids()
        one = value.to(log_p.dtype)
        return (_xlogy_free(one, log_p) + _xlogy_free(1 - one, log_q)).sum(-1)

    def entropy(self) -> Tensor:
        p = self.probs
        log_p, log_q = self._log_sigmoids()
        return -(_xlogy_free(p, log_p) + _xlogy_free(1 - p, log_q)).sum(-1)

    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def kl(self, other: Distribution) -> Tensor:
        check_same_family(self, other)
        other = cast(Bernoulli, other)
        p = self.probs
        # log p/q = logsigmoid(a) - logsigmoid(b); log (1-p)/(1-q) = logsigmoid(-a) - logsigmoid(-b)
        a_pos, a_neg = self._log_sigmoids()
        b_pos, b_neg = other._log_sigmoids()
        off_pos, off_neg = p == 0, p == 1  # the outcome has probability 0 under self
        pos = a_pos.masked_fill(off_pos, 0.0) - b_pos.masked_fill(off_pos, 0.0)
        neg = a_neg.masked_fill(off_neg, 0.0) - b_neg.masked_fill(off_neg, 0.0)
        return (p * pos + (1 - p) * neg).sum(-1)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor]:
        (u,) = check_tangents(self, tangents)
        p = self.probs
        return (p * (1 - p) * u,)
