"""``DiagonalPreconditioner``: the diagonal Fisher as a drop-in preconditioner.

The same loop, hooks, options and data parallelism as
:class:`~natgrad.optim.KFACPreconditioner`, with the Fisher's diagonal

    d = (1/B) Σ_b ĝ_b²,   ĝ_b = ∇_θ log p(ŷ_b | x_b)

in place of the Kronecker factors, kept as an EMA; the step is ``g / (d + λ)``
elementwise.  The per-example gradients ``ĝ_b`` come from the captured layer
inputs and output gradients (``Σ_p g_bp ã_bpᵀ`` for a Linear/Conv layer,
:func:`natgrad.optim._layers.per_example_squares`), not from a per-example
backward, so the cost is one extra matrix product per layer.  For a layer
applied at several positions (a convolution, a sequence) the example is the
leading dimension of its input.  Unlike :class:`~natgrad.optim.DiagonalFisher`,
which takes any parameters, it handles the layer types K-FAC handles; other
modules keep their plain gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.optim._base import Damping
from natgrad.optim._capture import Call
from natgrad.optim._layer_preconditioner import LayerPreconditioner
from natgrad.optim._layers import per_example_squares

__all__ = ["DiagonalPreconditioner"]


class DiagonalPreconditioner(LayerPreconditioner):
    """Diagonal-Fisher preconditioning of ``.grad`` in place, for any torch optimiser.

    Args:
        model: The network (or its ``DistributedDataParallel`` wrapper).
        likelihood: ``"categorical"``, ``"gaussian"`` or a callable
            ``output -> natgrad Distribution`` (see :class:`KFACPreconditioner`).
        likelihood_std: σ of the ``"gaussian"`` likelihood.
        fisher: ``"true"`` (sampled targets, default), ``"expectation"`` or ``"empirical"``.
        n_samples: Sampled targets per output for ``fisher="true"``.
        damping: λ, a float >= 0 or a schedule ``damping(step) -> float``.
        factor_decay: EMA decay of the diagonal.
        update_factors_every: Update the diagonal every this many steps.
        kl_clip: κ of the KL clip (None: no clipping).
        lr: The optimiser's learning rate (float or callable) for the clip.
        skip_layers: Module paths or class names to leave unpreconditioned.
        seed: Seed of the private generator of sampled targets (offset by the rank).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: str | Callable[[Any], Distribution],
        likelihood_std: float = 1.0,
        fisher: str = "true",
        n_samples: int = 1,
        damping: Damping = 1e-3,
        factor_decay: float = 0.95,
        update_factors_every: int = 1,
        kl_clip: float | None = None,
        lr: float | Callable[[], float] | None = None,
        skip_layers: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        super().__init__(
            model,
            likelihood=likelihood,
            likelihood_std=likelihood_std,
            fisher=fisher,
            n_samples=n_samples,
            damping=damping,
            factor_decay=factor_decay,
            update_factors_every=update_factors_every,
            kl_clip=kl_clip,
            lr=lr,
            skip_layers=skip_layers,
            seed=seed,
        )
        self.diag: list[list[Tensor]] | None = None

    def _statistics(self, calls: list[Call]) -> list[list[Tensor]]:
        out = []
        for i, b in enumerate(self.blocks):
            mine = [c for c in calls if c.block == i and c.gs]
            if not mine:
                raise ValueError(
                    f"DiagonalPreconditioner: layer {b!r} was not called (with autograd on) in "
                    "the forward pass(es) captured since the last step, or no gradient reached "
                    "it; was it replaced or wrapped after the preconditioner was made? Pass "
                    "skip_layers=[...] to leave it out"
                )
            sums = [torch.zeros_like(p) for p in b.params]
            n = 0
            for fid in sorted({c.forward for c in mine}):
                group = [c for c in mine if c.forward == fid]
                n += group[0].n
                for s in range(len(group[0].gs)):
                    sq = per_example_squares(b, [c.x for c in group], [c.gs[s] for c in group])
                    for acc, t in zip(sums, sq, strict=True):
                        acc.add_(t)
            ref = sums[0]
            out.append([*sums, torch.tensor([n], dtype=ref.dtype, device=ref.device)])
        return out

    def _fold(self, stats: list[list[Tensor]]) -> None:
        new = [[t / float(s[-1]) for t in s[:-1]] for s in stats]
        if self.diag is None:
            self.diag = new
            return
        for old, fresh in zip(self.diag, new, strict=True):
            for d, t in zip(old, fresh, strict=True):
                d.lerp_(t, 1.0 - self.factor_decay)

    def _prepare(self, damping: float) -> bool:
        assert self.diag is not None  # the first step always updates the diagonal
        if damping == 0 and any(bool((d <= 0).any()) for ds in self.diag for d in ds):
            raise ValueError(
                "the Fisher diagonal has zero entries and damping is 0, so (d + λ) is not "
                "invertible; use damping > 0 (e.g. 1e-3)"
            )
        return False

    def _solve(self, block: int, grads: list[Tensor], damping: float) -> list[Tensor]:
        assert self.diag is not None
        return [g / (d + damping) for g, d in zip(grads, self.diag[block], strict=True)]

    def _factor_state(self) -> list[Any]:
        return [None if self.diag is None else [[d.clone() for d in ds] for ds in self.diag]]

    def _load_factor_state(self, state: list[Any]) -> None:
        (diag,) = state
        if diag is not None:
            for ds, b in zip(diag, self.blocks, strict=True):
                if [d.shape for d in ds] != [p.shape for p in b.params]:
                    raise ValueError(f"state_dict's diagonal does not fit layer {b.path}")
            diag = [
                [d.detach().clone().to(p) for d, p in zip(ds, b.params, strict=True)]
                for ds, b in zip(diag, self.blocks, strict=True)
            ]
        self.diag = diag

    def dense(self) -> Tensor:
        """The undamped diagonal ``F̂`` as a matrix over ``self.params`` (small models)."""
        if self.diag is None:
            raise ValueError("DiagonalPreconditioner has no estimate yet; take a step first")
        return torch.diag(torch.cat([d.reshape(-1) for ds in self.diag for d in ds]))

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.params)
        skipped = f"; unpreconditioned [{', '.join(self.skipped)}]" if self.skipped else ""
        return (
            f"DiagonalPreconditioner({self.fisher_kind}; {len(self.blocks)} layers, {n} "
            f"parameters{skipped}; damping={self.damping!r}, factor_decay={self.factor_decay}, "
            f"update_factors_every={self.update_factors_every}, kl_clip={self.kl_clip}, "
            f"steps={self.steps})"
        )
