"""Categorical distributions on logits, alone or side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from natgrad.distributions.base import Distribution, as_tensor_param, check_same_family


class Categorical(Distribution):
    """A batch of categoricals over the last dimension of ``logits``.

    The output-space Fisher on logits is ``diag(p) − p pᵀ``; its product with
    ``u`` is ``p ⊙ u − p (pᵀu)``.

    >>> c = Categorical(torch.zeros(1, 2))
    >>> c.fisher_mv([torch.tensor([[1.0, -1.0]])])
    (tensor([[ 0.5000, -0.5000]]),)
    """

    def __init__(self, logits: Tensor) -> None:
        logits = as_tensor_param("logits", logits)
        if logits.dim() < 1 or logits.shape[-1] < 1:
            raise ValueError(
                f"logits must have a last dimension of categories, got shape {tuple(logits.shape)}"
            )
        self.logits = logits
        self._log_probs: Tensor | None = None

    @property
    def log_probs(self) -> Tensor:
        """Normalised log-probabilities (cached)."""
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
        return self.log_probs.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        lp = self.log_probs
        return -(lp.exp() * lp).sum(-1)

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def kl(self, other: Distribution) -> Tensor:
        check_same_family(self, other)
        other = cast(Categorical, other)
        lp, lq = self.log_probs, other.log_probs
        return (lp.exp() * (lp - lq)).sum(-1)

    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor]:
        (u,) = tangents
        p = self.probs
        pu = p * u
        return (pu - p * pu.sum(-1, keepdim=True),)


class MultiCategorical(Distribution):
    """Independent categoricals side by side (a ``MultiDiscrete`` action).

    Args:
        logits: Tensor ``(*batch, sum(nvec))``, the concatenated logits.
        nvec: Number of categories of each component.

    ``log_prob``, ``entropy`` and ``kl`` sum over components; values are
    integer tensors ``(*batch, len(nvec))``.  The Fisher is block diagonal with
    one ``diag(p) − p pᵀ`` block per component.
    """

    def __init__(self, logits: Tensor, nvec: Sequence[int]) -> None:
        logits = as_tensor_param("logits", logits)
        nvec = [int(n) for n in nvec]
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
        (u,) = tangents
        chunks = torch.split(u, list(self.nvec), dim=-1)
        out = [c.fisher_mv([ui])[0] for c, ui in zip(self.parts, chunks, strict=True)]
        return (torch.cat(out, dim=-1),)
