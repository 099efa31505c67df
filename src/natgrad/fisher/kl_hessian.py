"""The seed article's Fisher: the Hessian of the KL with its first argument fixed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.fisher.base import ModelFn, _AutogradOperator, check_batch, check_dist, subsample_batch
from natgrad.params import flatten


class KLHessianFisher(_AutogradOperator):
    """The seed's Fisher: the Hessian of ``mean KL(stop_grad(p) ‖ p)`` by double backprop.

    Same arguments as :class:`GGNFisher` (less ``linearize``).  Each product is
    the gradient of ``(∇KL)·v``, about twice a gradient in cost; it is the
    reference that the GGN product is tested against.
    """

    def __init__(
        self,
        fn: ModelFn,
        params: Sequence[Tensor],
        batch: Any = None,
        *,
        damping: float = 0.0,
        subsample: float | int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(params, damping)
        check_batch(batch)
        leaves = self._leaves(self.params)
        with torch.enable_grad():
            dist = fn(leaves, subsample_batch(batch, subsample, generator))
        check_dist(dist, "fn(params, batch)")
        self._setup(dist, leaves)

    @classmethod
    def from_distribution(
        cls, dist: Distribution, params: Sequence[Tensor], *, damping: float = 0.0
    ) -> KLHessianFisher:
        """Build from a forward you already made (as sb3-contrib's TRPO does)."""
        self = cls.__new__(cls)
        _AutogradOperator.__init__(self, params, damping)
        check_dist(dist)
        self._setup(dist, self.params)
        return self

    def _setup(self, dist: Distribution, leaves: Sequence[Tensor]) -> None:
        self._leaves_ = list(leaves)
        with torch.enable_grad():
            kl = dist.detach().kl(dist).mean()  # the seed's kl_fixed
            grads = torch.autograd.grad(kl, self._leaves_, create_graph=True, allow_unused=True)
        self._kl_grad = flatten(
            [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]
        )

    def _mv(self, v: Tensor) -> Tensor:
        if not self._kl_grad.requires_grad:
            return torch.zeros_like(v)
        return flatten(self._grad(self._kl_grad @ v, self._leaves_))
