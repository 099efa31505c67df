"""The KL trust-region step: natural direction by CG, scaled to the KL radius, line-searched.

Given the gradient ``g`` of a loss to *minimise* and a Fisher operator ``F``:

1. ``x ≈ F⁻¹ g`` by conjugate gradient;
2. ``β = sqrt(2δ / xᵀFx)``, so that the quadratic model of the KL of the full
   step ``−βx`` equals the radius δ (``½ (βx)ᵀF(βx) = δ``);
3. backtracking: try ``θ₀ − ρᵏ β x`` for k = 0, 1, ...; accept the first
   point whose *measured* KL is ≤ δ **and** whose loss improved;
4. if none is accepted the parameters are restored bit for bit.

Failures (CG breakdown or divergence, no acceptable point, non-finite values)
come back in :class:`StepInfo`; nothing is raised for them.  Bad arguments
(``max_kl`` not a finite number > 0, a NaN gradient, shapes that do not fit)
raise ``ValueError`` naming the argument.  If ``loss_fn``/``kl_fn`` raise at a
trial point the parameters are restored before the exception propagates; a
trial whose model outputs are not finite (a
:class:`~natgrad.distributions.NonFiniteError` from building the distribution)
is rejected as ``"non_finite"`` and the search goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from natgrad.distributions.base import NonFiniteError
from natgrad.linalg.cg import CGResult, MatVec
from natgrad.linalg.direction import (
    NaturalDirection,
    _check_max_kl,
    natural_direction,
    scaled_direction,
)
from natgrad.params import as_param_list, numel, unflatten

__all__ = [
    "NaturalDirection",
    "StepInfo",
    "line_search",
    "natural_direction",
    "natural_step",
    "scaled_direction",
    "trust_region_step",
]

ScalarFn = Callable[[], Tensor | float]


@dataclass(frozen=True)
class StepInfo:
    """What a natural-gradient step did.

    Attributes:
        accepted: The parameters were moved (False: restored exactly).
        reason: ``"accepted"``, ``"kl_exceeded"``, ``"no_improvement"``,
            ``"non_finite"`` (a trial, or the loss at θ₀, gave NaN/inf),
            ``"cg_breakdown"`` (no usable direction), ``"cg_diverged"`` (CG's
            iterate diverged: :attr:`CGResult.diverged`) or ``"zero_gradient"``.
        backtracks: Shrinks made before the accepted point (or in all, if rejected).
        step_fraction: ``ρᵏ`` of the accepted point; 0.0 if rejected.
        step_size: β, the scale of the full step.
        kl: Measured KL at the accepted point, or at the last trial if rejected.
            NaN is a sentinel, not a result: "not measured" (no trial made, or
            :func:`natural_step` without ``kl_fn``).
        loss_before: Loss at θ₀ (NaN: not measured, :func:`natural_step` without
            ``loss_fn``).
        loss_after: Loss at the final parameters (NaN: not measured).
        expected_improvement: First-order predicted decrease of the full step, ``β gᵀx``.
        cg: The conjugate-gradient record.
    """

    accepted: bool
    reason: str
    backtracks: int
    step_fraction: float
    step_size: float
    kl: float
    loss_before: float
    loss_after: float
    expected_improvement: float
    cg: CGResult

    @property
    def improvement(self) -> float:
        """``loss_before − loss_after`` (0.0 when the step was rejected)."""
        return self.loss_before - self.loss_after


def _float(x: Tensor | float) -> float:
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def _check_step_args(params: Sequence[Tensor], grad: Tensor, max_kl: float) -> list[Tensor]:
    params = as_param_list(params)
    n = numel(params)
    if not isinstance(grad, Tensor) or grad.dim() != 1 or grad.shape[0] != n:
        shape = tuple(grad.shape) if isinstance(grad, Tensor) else type(grad).__name__
        raise ValueError(
            f"grad has shape {shape}, but params have {n} entries; pass the flat gradient "
            "(natgrad.params.flatten of the per-parameter gradients)"
        )
    if not torch.isfinite(grad).all():
        raise ValueError(
            "grad contains NaN or inf; check the loss and the data (rewards, observations)"
        )
    _check_max_kl(max_kl)
    return params


@torch.no_grad()
def _apply(
    params: Sequence[Tensor], old: Sequence[Tensor], step: Sequence[Tensor], f: float
) -> None:
    for p, p0, s in zip(params, old, step, strict=True):
        torch.add(p0, s, alpha=-f, out=p)


def _finite(params: Sequence[Tensor]) -> bool:
    """The parameters of a trial point are finite (a huge step can overflow their dtype)."""
    return all(bool(torch.isfinite(p).all()) for p in params)


@torch.no_grad()
def _restore(params: Sequence[Tensor], old: Sequence[Tensor]) -> None:
    for p, p0 in zip(params, old, strict=True):
        p.copy_(p0)


def trust_region_step(
    params: Sequence[Tensor],
    grad: Tensor,
    fisher_mv: MatVec,
    loss_fn: ScalarFn,
    kl_fn: ScalarFn,
    *,
    max_kl: float,
    cg_iters: int = 10,
    cg_rtol: float = 1e-10,
    cg_atol: float = 0.0,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 10,
    loss_before: float | None = None,
    preconditioner: MatVec | None = None,
) -> StepInfo:
    """One TRPO step on ``params`` in place: CG → scale to δ → line search → accept or restore.

    Args:
        params: The tensors to move (leaf parameters), in flat-vector order.
        grad: Flat gradient of the loss at the current parameters.
        fisher_mv: ``v ↦ (F + λI) v``, e.g. ``FisherOperator.mv``.
        loss_fn: The loss at the current parameter values (called under no_grad).
        kl_fn: Mean ``KL(p_θ₀ ‖ p_θ)`` at the current parameter values.
        max_kl: The trust-region radius δ.
        cg_iters: CG iterations (10-25 is usual).
        cg_rtol: CG relative residual tolerance.
        cg_atol: CG absolute residual tolerance.
        backtrack_ratio: ρ in (0, 1), the shrink factor.
        max_backtracks: Trial points in all (at least 1).
        loss_before: Loss at θ₀ if already known (saves one evaluation).
        preconditioner: Optional ``r ↦ M⁻¹ r`` for CG.

    Returns:
        A :class:`StepInfo`.  On rejection the parameters are bit-identical to before.
    """
    params = _check_step_args(params, grad, max_kl)
    _check_line_search(backtrack_ratio, max_backtracks)
    with torch.no_grad():
        l0 = _float(loss_fn()) if loss_before is None else float(loss_before)
    if not bool(grad.abs().max() > 0):
        cg0 = CGResult(torch.zeros_like(grad), 0, 0.0, True, False)
        return StepInfo(False, "zero_gradient", 0, 0.0, 0.0, math.nan, l0, l0, 0.0, cg0)
    d = natural_direction(
        fisher_mv, grad, max_kl, cg_iters=cg_iters, cg_rtol=cg_rtol, cg_atol=cg_atol,
        preconditioner=preconditioner,
    )  # fmt: skip
    return line_search(
        params, d, loss_fn, kl_fn, max_kl=max_kl, backtrack_ratio=backtrack_ratio,
        max_backtracks=max_backtracks, loss_before=l0,
    )  # fmt: skip


def _check_line_search(backtrack_ratio: float, max_backtracks: int) -> None:
    if not 0 < backtrack_ratio < 1:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio!r}")
    if not isinstance(max_backtracks, int) or max_backtracks < 1:
        raise ValueError(f"max_backtracks must be an int >= 1, got {max_backtracks!r}")


def line_search(
    params: Sequence[Tensor],
    direction: NaturalDirection,
    loss_fn: ScalarFn,
    kl_fn: ScalarFn,
    *,
    max_kl: float,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 10,
    loss_before: float | None = None,
) -> StepInfo:
    """Backtrack along ``−β x`` until the measured KL ≤ δ and the loss improved, else restore.

    The second half of :func:`trust_region_step`, for a direction found some other
    way (a K-FAC solve, say).  Trial ``k`` is ``θ₀ − ρᵏ β x``.
    """
    params = as_param_list(params)
    _check_line_search(backtrack_ratio, max_backtracks)
    max_kl = _check_max_kl(max_kl)
    if not isinstance(direction, NaturalDirection):
        raise ValueError(
            f"direction must be a NaturalDirection (from natural_direction or "
            f"scaled_direction), got {type(direction).__name__}"
        )
    d = direction
    if d.x.shape != (numel(params),):
        raise ValueError(
            f"direction.x has shape {tuple(d.x.shape)}, but params have {numel(params)} entries"
        )
    with torch.no_grad():
        l0 = _float(loss_fn()) if loss_before is None else _float(loss_before)
    if not d.usable:
        return StepInfo(False, d.failure, 0, 0.0, 0.0, math.nan, l0, l0, 0.0, d.cg)
    if not math.isfinite(l0):
        return StepInfo(False, "non_finite", 0, 0.0, d.step_size, math.nan, l0, l0, 0.0, d.cg)
    old = [p.detach().clone() for p in params]
    step = unflatten(d.x * d.step_size, params, "step")
    reason, kl, frac = "kl_exceeded", math.nan, 1.0
    try:
        for k in range(max_backtracks):
            _apply(params, old, step, frac)
            with torch.no_grad():
                try:
                    if not _finite(params):
                        raise NonFiniteError("the trial parameters overflowed")
                    kl, loss = _float(kl_fn()), _float(loss_fn())
                except NonFiniteError:  # the model's outputs at this trial are not finite
                    kl, loss = math.nan, math.nan
            if not (math.isfinite(kl) and math.isfinite(loss)):
                reason = "non_finite"
            elif kl > max_kl:
                reason = "kl_exceeded"
            elif not loss < l0:
                reason = "no_improvement"
            else:
                return StepInfo(
                    True, "accepted", k, frac, d.step_size, kl, l0, loss,
                    d.expected_improvement, d.cg,
                )  # fmt: skip
            frac *= backtrack_ratio
    except BaseException:
        _restore(params, old)
        raise
    _restore(params, old)
    return StepInfo(
        False, reason, max_backtracks, 0.0, d.step_size, kl, l0, l0, d.expected_improvement, d.cg
    )


def natural_step(
    params: Sequence[Tensor],
    grad: Tensor,
    fisher_mv: MatVec | None,
    *,
    max_kl: float,
    cg_iters: int = 10,
    cg_rtol: float = 1e-10,
    cg_atol: float = 0.0,
    kl_fn: ScalarFn | None = None,
    loss_fn: ScalarFn | None = None,
    preconditioner: MatVec | None = None,
    direction: NaturalDirection | None = None,
) -> StepInfo:
    """NPG: the natural step of fixed KL radius, ``θ ← θ − βx``, with no line search.

    ``kl_fn`` and ``loss_fn`` are optional and only measured for the record
    (one evaluation each; NaN in the record when not given).  An unusable
    direction (CG breakdown or divergence) leaves the parameters unchanged, and
    so does a step after which a measured KL or loss is not finite (reason
    ``"non_finite"``, parameters restored).  ``direction`` skips CG
    (``fisher_mv`` may then be None).
    """
    params = _check_step_args(params, grad, max_kl)
    with torch.no_grad():
        l0 = _float(loss_fn()) if loss_fn is not None else math.nan
    if direction is not None:
        d = direction
    elif fisher_mv is None:
        raise ValueError("natural_step needs fisher_mv or a precomputed direction")
    else:
        d = natural_direction(
            fisher_mv, grad, max_kl, cg_iters=cg_iters, cg_rtol=cg_rtol, cg_atol=cg_atol,
            preconditioner=preconditioner,
        )  # fmt: skip
    if not isinstance(d, NaturalDirection) or d.x.shape != grad.shape:
        got = tuple(d.x.shape) if isinstance(d, NaturalDirection) else type(d).__name__
        raise ValueError(
            f"direction must be a NaturalDirection for {grad.shape[0]} entries, got {got}"
        )
    if not d.usable:
        return StepInfo(False, d.failure, 0, 0.0, 0.0, math.nan, l0, l0, 0.0, d.cg)
    old = [p.detach().clone() for p in params]
    _apply(params, old, unflatten(d.x * d.step_size, params, "step"), 1.0)
    try:
        with torch.no_grad():
            try:
                if not _finite(params):
                    raise NonFiniteError("the new parameters overflowed")
                kl = _float(kl_fn()) if kl_fn is not None else math.nan
                l1 = _float(loss_fn()) if loss_fn is not None else math.nan
                bad = (kl_fn is not None and not math.isfinite(kl)) or (
                    loss_fn is not None and not math.isfinite(l1)
                )
            except NonFiniteError:
                kl, l1, bad = math.nan, math.nan, True
    except BaseException:
        _restore(params, old)
        raise
    if bad:
        _restore(params, old)
        return StepInfo(
            False, "non_finite", 1, 0.0, d.step_size, kl, l0, l0, d.expected_improvement, d.cg
        )
    return StepInfo(True, "accepted", 0, 1.0, d.step_size, kl, l0, l1, d.expected_improvement, d.cg)
