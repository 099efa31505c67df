"""A diagonal Fisher: the cheapest structured natural-gradient baseline.

The diagonal of the Fisher of parameters θ,

    diag F = (1/B) Σ_b E_{ŷ~p(·|x_b)} [ (∂ log p(ŷ|x_b) / ∂θ)² ],

is estimated from gradients of the log-likelihood of targets **sampled from
the model** (the true Fisher), squared per batch element, and kept as an
exponential moving average.  The natural gradient is then the elementwise
``g / (d + λ)``.

Two estimators of the per-batch diagonal:

* ``per_sample=True`` (default): the exact per-element squares
  ``(1/B) Σ_b ĝ_b²``, from one vmapped backward (``is_grads_batched``);
  memory ``B × dim θ``.
* ``per_sample=False``: ``(1/B) (Σ_b ĝ_b)²`` from one ordinary backward.  It is
  unbiased for sampled targets because scores have mean zero under the model
  (the cross terms vanish in expectation), but noisier; the EMA averages the
  noise down.  Only available with sampled targets.

``empirical=True`` squares the gradients at the *observed* targets instead:
the diagonal of the empirical Fisher, which is not the Fisher.

Example:
    >>> import torch
    >>> from natgrad.distributions import Categorical
    >>> net = torch.nn.Linear(3, 2)
    >>> diag = DiagonalFisher(list(net.parameters()), damping=1e-2, seed=0)
    >>> diag.update_factors(Categorical(net(torch.randn(8, 3))))
    >>> [g.shape for g in diag.solve([torch.ones(2, 3), torch.ones(2)])]
    [torch.Size([2, 3]), torch.Size([2])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.optim._base import Damping, Preconditioner
from natgrad.optim._common import output_cotangents, per_example_grads
from natgrad.params import as_param_list


class DiagonalFisher(Preconditioner):
    """EMA of the diagonal of the (true, by default) Fisher of ``params``.

    Args:
        params: The parameters whose Fisher diagonal is estimated.
        damping: λ (float or schedule ``damping(step)``), added to the diagonal.
        decay: EMA decay of the diagonal.
        per_sample: Exact per-element squares (see the module docstring).
        empirical: See :class:`Preconditioner`.
        expectation: See :class:`Preconditioner`.
        n_samples: See :class:`Preconditioner`.
        seed: See :class:`Preconditioner`.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        *,
        damping: Damping = 1e-3,
        decay: float = 0.95,
        per_sample: bool = True,
        empirical: bool = False,
        expectation: bool = False,
        n_samples: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            damping=damping,
            decay=decay,
            empirical=empirical,
            expectation=expectation,
            n_samples=n_samples,
            seed=seed,
        )
        self.params = as_param_list(params)
        if not per_sample and self.mode != "sample":
            raise ValueError(
                "per_sample=False (the single-backward estimate) is only unbiased for "
                f"sampled targets, but this DiagonalFisher uses mode {self.mode!r}; "
                "set per_sample=True"
            )
        self.per_sample = bool(per_sample)
        self.diag: list[Tensor] | None = None

    def update_factors(self, dist: Distribution, targets: Tensor | None = None) -> None:
        """Estimate the diagonal on ``dist``'s batch and fold it into the EMA.

        Args:
            dist: The model's output on a batch, computed from ``params`` with
                autograd on (its graph is kept for the caller's own backward).
            targets: Observed targets; used (and required) only when ``empirical``.
        """
        outputs, cots = output_cotangents(
            dist,
            self.mode,
            targets=targets,
            n_samples=self.n_samples,
            generator=self.generator(dist.params[0].device),
        )
        self.accumulate(outputs, cots, dist.batch_shape)

    def accumulate(
        self, outputs: list[Tensor], cots: list[tuple[Tensor, ...]], batch_shape: torch.Size
    ) -> None:
        """Fold a batch in from output cotangents already made (K-FAC shares its samples)."""
        n = int(torch.Size(batch_shape).numel())
        new = [torch.zeros_like(p) for p in self.params]
        for u in cots:
            if self.per_sample:
                per = per_example_grads(outputs, u, self.params, batch_shape)
                for acc, g in zip(new, per, strict=True):
                    acc.add_(g.square().sum(0))
            else:
                grads = torch.autograd.grad(
                    outputs, self.params, list(u), retain_graph=True, allow_unused=True
                )
                for acc, g in zip(new, grads, strict=True):
                    if g is not None:
                        acc.add_(g.square())
        new = [d / n for d in new]
        if self.diag is None:
            self.diag = new
        else:
            for d, b in zip(self.diag, new, strict=True):
                d.lerp_(b, 1.0 - self.decay)
        self.steps += 1

    def _solve(self, grads: list[Tensor], damping: float) -> list[Tensor]:
        assert self.diag is not None  # guarded by _check_ready
        if damping == 0 and any(bool((d <= 0).any()) for d in self.diag):
            raise ValueError(
                "the Fisher diagonal has zero entries and damping is 0, so (diag + λ) is not "
                "invertible; use damping > 0 (e.g. 1e-3)"
            )
        return [g / (d + damping) for g, d in zip(grads, self.diag, strict=True)]

    def _quad(self, xs: list[Tensor]) -> Tensor:
        assert self.diag is not None
        return sum((d * x.square()).sum() for d, x in zip(self.diag, xs, strict=True))  # type: ignore[return-value]

    def dense(self) -> Tensor:
        self._check_ready()
        assert self.diag is not None
        return torch.diag(torch.cat([d.reshape(-1) for d in self.diag]))

    def state_dict(self) -> dict[str, Any]:
        """Steps, generator state and the EMA diagonal (cloned)."""
        state = self._base_state()
        state["diag"] = None if self.diag is None else [d.clone() for d in self.diag]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; shapes must match the parameters."""
        diag = state.get("diag")
        if diag is not None:
            if len(diag) != len(self.params) or any(
                d.shape != p.shape for d, p in zip(diag, self.params, strict=True)
            ):
                raise ValueError(
                    "state_dict's diagonal does not match this DiagonalFisher's parameters "
                    f"({len(diag)} tensors for {len(self.params)} parameters)"
                )
            diag = [d.detach().clone().to(p) for d, p in zip(diag, self.params, strict=True)]
        self._load_base_state(state)
        self.diag = diag

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.params)
        return (
            f"DiagonalFisher({n} parameters, {self.fisher_kind}, damping={self.damping!r}, "
            f"decay={self.decay}, per_sample={self.per_sample}, steps={self.steps})"
        )
