"""The empirical Fisher: score outer products at observed targets (not the Fisher)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.fisher.base import ModelFn, _AutogradOperator, check_batch, check_dist


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

    Raises:
        ValueError: an empty batch, a batch with NaN/inf, or targets that do not
            fit the batch (count) or the distribution (e.g. a float class index).
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
        check_batch(batch)
        primals = tuple(p.detach() for p in self.params)
        # One plain forward checks what vmap cannot: an empty batch, and targets
        # outside the support (values are not concrete inside vmap).
        with torch.no_grad():
            dist = fn(primals, batch)
        check_dist(dist, "fn(params, batch)")
        rows = dist.batch_shape[0] if len(dist.batch_shape) else 0
        if targets.dim() == 0 or targets.shape[0] != rows:
            raise ValueError(
                f"targets has shape {tuple(targets.shape)}, but the batch has {rows} rows "
                f"(distribution batch shape {tuple(dist.batch_shape)}); pass one target per row"
            )
        try:
            dist.log_prob(targets)
        except ValueError as err:  # a target off the support, e.g. a float class index
            raise ValueError(f"targets do not fit the model's distribution: {err}") from None

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
