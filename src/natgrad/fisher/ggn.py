"""The exact Fisher as a generalised Gauss-Newton product ``Jᵀ F_out J v``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.fisher.base import ModelFn, _AutogradOperator, check_batch, check_dist, subsample_batch
from natgrad.params import flatten, unflatten


class GGNFisher(_AutogradOperator):
    """The exact Fisher as ``Jᵀ F_out J v`` (a generalised Gauss-Newton product).

    Args:
        fn: ``fn(params, batch) -> Distribution``, a function of the listed tensors.
        params: The parameters, in the order of the flat vector.
        batch: Inputs passed to ``fn`` (a Tensor, a tuple of Tensors, or None).
        damping: λ in ``F + λI``.
        subsample: Use a random fraction (or count) of the batch rows.
        generator: Random source for ``subsample``.
        linearize: Linearise once and reuse it for every product (default), or
            recompute with one ``torch.func.jvp`` and a stored vjp per product.

    Raises:
        ValueError: an empty batch (0 rows), a batch holding NaN/inf, bad
            ``damping``/``subsample``, or model outputs a distribution refuses
            (e.g. a NaN mean: :class:`~natgrad.distributions.NonFiniteError`).
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
        linearize: bool = True,
    ) -> None:
        super().__init__(params, damping)
        check_batch(batch)
        batch = subsample_batch(batch, subsample, generator)
        self.linearize = linearize
        if linearize:
            leaves = self._leaves(self.params)
            with torch.enable_grad():
                dist = fn(leaves, batch)
            self._setup_linearized(dist, leaves)
        else:
            primals = tuple(p.detach() for p in self.params)
            holder: list[Distribution] = []

            def outputs(*values: Tensor) -> tuple[Tensor, ...]:
                d = fn(values, batch)
                holder.append(d)
                return d.params

            out, self._vjp_fn = torch.func.vjp(outputs, *primals)  # type: ignore[misc]
            check_dist(holder[0], "fn(params, batch)")
            self._jvp_fn = outputs
            self._primals = primals
            self.dist = holder[0].with_params([o.detach() for o in out])

    @classmethod
    def from_distribution(
        cls, dist: Distribution, params: Sequence[Tensor], *, damping: float = 0.0
    ) -> GGNFisher:
        """Linearise around a forward pass you already made (it shares its graph).

        ``dist`` must have been computed from ``params`` with autograd on, e.g. the
        forward of TRPO's surrogate loss; no second forward is made.
        """
        self = cls.__new__(cls)
        _AutogradOperator.__init__(self, params, damping)
        check_dist(dist)
        self.linearize = True
        if not any(p.requires_grad for p in dist.params):
            raise ValueError(
                "dist was computed without autograd (its parameters do not require grad); "
                "compute it from params outside torch.no_grad()"
            )
        self._setup_linearized(dist, self.params)
        return self

    def _setup_linearized(self, dist: Distribution, leaves: Sequence[Tensor]) -> None:
        check_dist(dist, "fn(params, batch)")
        self.dist = dist.detach()
        self._outputs = dist.params
        self._leaves_ = list(leaves)
        # Jᵀu is linear in u; differentiating it with respect to u gives J v.
        self._dummies = [torch.zeros_like(o, requires_grad=True) for o in self._outputs]
        with torch.enable_grad():
            contracted = torch.stack(
                [(o * d).sum() for o, d in zip(self._outputs, self._dummies, strict=True)]
            ).sum()
            vjp = torch.autograd.grad(
                contracted, self._leaves_, create_graph=True, allow_unused=True
            )
        self._lin_idx = [i for i, g in enumerate(vjp) if g is not None and g.requires_grad]
        self._lin_grads = [vjp[i] for i in self._lin_idx]

    def jvp(self, vs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``J v``: the change of the distribution's parameters along ``v``."""
        if not self.linearize:
            _, tangents = torch.func.jvp(self._jvp_fn, self._primals, tuple(vs))  # type: ignore[misc]
            return tuple(tangents)
        if not self._lin_idx:
            return tuple(torch.zeros_like(o) for o in self._outputs)
        return tuple(self._grad(self._lin_grads, self._dummies, [vs[i] for i in self._lin_idx]))

    def vjp(self, ws: Sequence[Tensor]) -> list[Tensor]:
        """``Jᵀ w``: pull an output-space cotangent back to the parameters."""
        if not self.linearize:
            return list(self._vjp_fn(tuple(ws)))
        return self._grad(self._outputs, self._leaves_, list(ws))

    def _mv(self, v: Tensor) -> Tensor:
        tangents = self.jvp(unflatten(v, self.params, "v"))
        scale = 1.0 / self.dist.batch_size
        cot = [t * scale for t in self.dist.fisher_mv(tangents)]
        return flatten(self.vjp(cot))
