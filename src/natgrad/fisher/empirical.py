"""The empirical Fisher: score outer products at observed targets (not the Fisher)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.fisher.base import ModelFn, _AutogradOperator


class EmpiricalFisher(_AutogradOperator):
    """The *empirical* Fisher ``(1/N) Σₙ ∇log p(yₙ|xₙ) ∇log p(yₙ|xₙ)ᵀ`` at observed targets.

    This is not the Fisher information: it uses data targets instead of
    samples from the model, and it differs from the Fisher away from a
    perfect fit.  It is offered because some methods use it, under a name that
    says what it is.  Per-sample scores are computed with ``torch.func.vmap``.

    Args:
        fn: As for :class:`GGNFisher`.
        params: As for :class:`GGNFisher`.
        batch: As for :class:`GGNFisher`.
        damping: As for :class:`GGNFisher`.
        targets: Observed values ``yₙ`` with the batch as first dimension.
    """

    def __init__(
        self,
        fn: ModelFn,
        params: Sequence[Tensor],
        batch: Any,
        targets: Tensor,
        *,
        damping: float = 0.0,
    ) -> None:
        super().__init__(params, damping)
        if not isinstance(targets, Tensor):
            raise ValueError(f"targets must be a Tensor, got {type(targets).__name__}")
        primals = tuple(p.detach() for p in self.params)

        def log_lik(values: tuple[Tensor, ...], x: Any, y: Tensor) -> Tensor:
            x1 = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), x)
            return fn(values, x1).log_prob(y.unsqueeze(0)).sum()

        per_sample = torch.func.vmap(torch.func.grad(log_lik), in_dims=(None, 0, 0))
        scores = per_sample(primals, batch, targets)
        self.scores = torch.cat([s.reshape(s.shape[0], -1) for s in scores], dim=1)

    def _mv(self, v: Tensor) -> Tensor:
        return self.scores.T @ (self.scores @ v) / self.scores.shape[0]

    def dense(self) -> Tensor:
        m = self.scores.T @ self.scores / self.scores.shape[0]
        return m + self.damping * torch.eye(self.dim, dtype=self.dtype)
