"""Categorical distributions on logits, alone or side by side.

**Masked logits.** A logit of ``-inf`` marks a category as impossible (an
illegal action).  Such a categorical is the renormalised distribution over
the remaining categories, and every quantity is computed as for that one:
``log_prob`` of a legal category, ``entropy``, ``kl`` and ``fisher_mv`` stay
finite (the masked rows and columns of the Fisher are zero), and their
gradients too.  ``log_prob`` of a masked category is ``-inf`` (its
probability is exactly zero, as in ``torch.distributions``); it is never NaN
and its gradient is finite, but a ratio ``exp(log_prob − old_log_prob)`` of
two ``-inf`` is NaN, which the natgrad entry points then refuse
(:func:`~natgrad.linalg.trust_region_step` rejects a NaN gradient) — an
action of probability zero cannot have been sampled, so it points at a
mismatched mask.  ``KL(p ‖ q)`` is ``+inf`` when ``q`` masks a category that
``p`` allows, and finite otherwise.  A NaN or ``+inf`` logit, or a row with
every logit ``-inf``, is refused at construction.
"""

from __future__ import annotations

import math
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


def _check_logits(logits: Tensor) -> None:
    if not holds(logits.detach() < math.inf):  # False for NaN and +inf
        kind = "NaN" if not holds(~torch.isnan(logits.detach())) else "+inf"
        raise NonFiniteError(
            f"logits contains {kind}; logits must be finite, or -inf to mask a category "
            "(for a certain category use a large finite logit and mask the others)"
        )
    if logits.numel() and not holds(logits.detach().amax(-1) > -math.inf):
        raise ValueError(
            "logits has a row whose every logit is -inf: no category is possible; "
            "leave at least one category unmasked per row"
        )


def _check_classes(name: str, value: Tensor, n: int) -> None:
    """``value`` holds integer class indices in ``[0, n)``."""
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices (dtype torch.long), got dtype "
            f"{value.dtype}; a float such as 0.7 is not a category (use value.long() only "
            "if the floats are whole numbers)"
        )
    if not holds((value >= 0) & (value < n)):
        lo, hi = int(value.min()), int(value.max())
        raise ValueError(
            f"{name} holds class indices in [{lo}, {hi}], outside [0, {n - 1}] for {n} categories"
        )


class Categorical(Distribution):
    """A batch of categoricals over the last dimension of ``logits``.

    The output-space Fisher on logits is ``diag(p) − p pᵀ``; its product with
    ``u`` is ``p ⊙ u − p (pᵀu)``.  Logits may be ``-inf`` (masked categories;
    see the module docstring).

    >>> c = Categorical(torch.zeros(1, 2))
    >>> c.fisher_mv([torch.tensor([[1.0, -1.0]])])
    (tensor([[ 0.5000, -0.5000]]),)
    >>> Categorical(torch.tensor([[0.0, 0.0, -float("inf")]])).entropy()  # log 2
    tensor([0.6931])
    """

    def __init__(self, logits: Tensor) -> None:
        logits = as_tensor_param("logits", logits)
        if logits.dim() < 1 or logits.shape[-1] < 1:
            raise ValueError(
                f"logits must have a last dimension of categories, got shape {tuple(logits.shape)}"
            )
        _check_logits(logits)
        self.logits = logits
        self._log_probs: Tensor | None = None

    @property
    def log_probs(self) -> Tensor:
        """Normalised log-probabilities (cached); ``-inf`` for masked categories."""
        if self._log_probs is None:
            self._log_probs = F.log_softmax(self.logits, dim=-1)
        return self._log_probs

    @property
    def probs(self) -> Tensor:
        return self.log_probs.exp()

    @property
    def params(self) -> tuple[Tensor]:
        return (self.logits,)

    def with_params(self, params: Sequence[Tensor]) -> Categorical:
        (logits,) = params
        return Categorical(logits)

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():  # not self.probs: that would cache log-probs without a graph
            flat = torch.softmax(self.logits.detach(), dim=-1).reshape(-1, self.logits.shape[-1])
            idx = torch.multinomial(flat, 1, generator=generator)
            return idx.reshape(self.batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(value)`` for integer class indices; ``-inf`` for a masked category.

        Raises:
            ValueError: ``value`` is not an integer tensor, is out of range, or its
                shape does not broadcast to the batch shape.
        """
        check_value_shape("value", value, torch.Size(), self.batch_shape)
        _check_classes("value", value, self.logits.shape[-1])
        idx = value.long().unsqueeze(-1)
        idx, lp = torch.broadcast_tensors(idx, self.log_probs)
        return lp.gather(-1, idx[..., :1]).squeeze(-1)

    def entropy(self) -> Tensor:
        lp = self.log_probs
        p = lp.exp()
        return -(p * lp.masked_fill(p == 0, 0.0)).sum(-1)

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def kl(self, other: Distribution) -> Tensor:
        """``Σ p (log p − log q)``: 0·log 0 counts as 0, and a category masked in ``other``
        but not in ``self`` makes it ``+inf``."""
        check_same_family(self, other)
        other = cast(Categorical, other)
        lp, lq = self.log_probs, other.log_probs
        p = lp.exp()
        off = p == 0
        return (p * (lp.masked_fill(off, 0.0) - lq.masked_fill(off, 0.0))).sum(-1)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor]:
        (u,) = check_tangents(self, tangents)
        p = self.probs
        pu = p * u
        return (pu - p * pu.sum(-1, keepdim=True),)


class MultiCategorical(Distribution):
    """Independent categoricals side by side (a ``MultiDiscrete`` action).

    Args:
        logits: Tensor ``(*batch, sum(nvec))``, the concatenated logits (``-inf``
            masks a category, as for :class:`Categorical`).
        nvec: Number of categories of each component.

    ``log_prob``, ``entropy`` and ``kl`` sum over components; values are
    integer tensors ``(*batch, len(nvec))``.  The Fisher is block diagonal with
    one ``diag(p) − p pᵀ`` block per component.
    """

    def __init__(self, logits: Tensor, nvec: Sequence[int]) -> None:
        logits = as_tensor_param("logits", logits)
        try:
            nvec = [int(n) for n in nvec]
        except (TypeError, ValueError):
            raise ValueError(f"nvec must be a list of positive ints, got {nvec!r}") from None
        if not nvec or min(nvec) < 1:
            raise ValueError(f"nvec must be a non-empty list of positive sizes, got {nvec}")
        if logits.dim() < 1 or logits.shape[-1] != sum(nvec):
            raise ValueError(
                f"logits' last dimension must be sum(nvec) = {sum(nvec)}, "
                f"got shape {tuple(logits.shape)}"
            )
        self.logits = logits
        self.nvec = tuple(nvec)
        self.parts = [Categorical(chunk) for chunk in torch.split(logits, list(self.nvec), dim=-1)]

    @property
    def params(self) -> tuple[Tensor]:
        return (self.logits,)

    def with_params(self, params: Sequence[Tensor]) -> MultiCategorical:
        (logits,) = params
        return MultiCategorical(logits, self.nvec)

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.stack([c.sample(generator) for c in self.parts], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        check_value_shape("value", value, torch.Size([len(self.nvec)]), self.batch_shape)
        return sum(c.log_prob(value[..., i]) for i, c in enumerate(self.parts))  # type: ignore[return-value]

    def entropy(self) -> Tensor:
        return sum(c.entropy() for c in self.parts)  # type: ignore[return-value]

    def mode(self) -> Tensor:
        return torch.stack([c.mode() for c in self.parts], dim=-1)

    def kl(self, other: Distribution) -> Tensor:
        check_same_family(self, other)
        other = cast(MultiCategorical, other)
        if other.nvec != self.nvec:
            raise ValueError(
                f"kl(other): other.nvec={other.nvec} differs from self.nvec={self.nvec}"
            )
        return sum(a.kl(b) for a, b in zip(self.parts, other.parts, strict=True))  # type: ignore[return-value]

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor]:
        (u,) = check_tangents(self, tangents)
        chunks = torch.split(u, list(self.nvec), dim=-1)
        out = [c.fisher_mv([ui])[0] for c, ui in zip(self.parts, chunks, strict=True)]
        return (torch.cat(out, dim=-1),)
