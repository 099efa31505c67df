"""The natural direction: ``x ≈ F⁻¹g`` by CG, and the scale β that puts it on the KL radius.

``β = sqrt(2δ / xᵀFx)`` makes the quadratic model of the KL of the step ``βx``
equal the radius δ (``½ (βx)ᵀF(βx) = δ``).  A direction that cannot be used
(CG breakdown or divergence, ``xᵀFx ≤ 0``, a non-finite ``x``) comes back with
``step_size`` 0; :func:`~natgrad.linalg.line_search` and
:func:`~natgrad.linalg.natural_step` then leave the parameters alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from natgrad.linalg.cg import CGResult, MatVec, cg


def _check_max_kl(max_kl: float) -> float:
    if (
        isinstance(max_kl, bool)
        or not isinstance(max_kl, (int, float))
        or not 0 < max_kl < math.inf
    ):
        raise ValueError(f"max_kl must be a finite number > 0, got {max_kl!r}; 0.01 is usual")
    return float(max_kl)


@dataclass(frozen=True)
class NaturalDirection:
    """``x ≈ F⁻¹g`` and the scale β that puts the quadratic KL of ``βx`` at the radius."""

    x: Tensor
    step_size: float
    expected_improvement: float
    cg: CGResult

    @property
    def usable(self) -> bool:
        return self.step_size > 0 and math.isfinite(self.step_size)

    @property
    def failure(self) -> str:
        """Why the direction is unusable: ``"cg_diverged"`` or ``"cg_breakdown"``."""
        return "cg_diverged" if self.cg.diverged else "cg_breakdown"


def natural_direction(
    fisher_mv: MatVec,
    grad: Tensor,
    max_kl: float,
    *,
    cg_iters: int = 10,
    cg_rtol: float = 1e-10,
    cg_atol: float = 0.0,
    preconditioner: MatVec | None = None,
) -> NaturalDirection:
    """Solve ``F x = g`` by CG and scale it to the KL radius: ``β = sqrt(2δ / xᵀFx)``.

    A CG breakdown keeps the last iterate (scaled as usual if ``xᵀFx > 0``); a
    diverged iterate gives an unusable direction (``step_size`` 0).

    Raises:
        ValueError: ``max_kl`` is not a finite number > 0, or ``grad`` is not a
            finite 1-d float vector (see :func:`~natgrad.linalg.cg`).
    """
    _check_max_kl(max_kl)
    result = cg(
        fisher_mv,
        grad,
        max_iter=cg_iters,
        rtol=cg_rtol,
        atol=cg_atol,
        preconditioner=preconditioner,
    )
    x = result.x
    # CG keeps r = g − Fx, so xᵀFx = xᵀ(g − r) without another Fisher product.
    if result.iterations == 0:
        xfx = 0.0
    elif result.residual is not None:
        xfx = float(x @ (grad - result.residual))
    else:
        xfx = float(x @ fisher_mv(x))
    return scaled_direction(x, xfx, grad, max_kl, result)


def scaled_direction(
    x: Tensor, xfx: float, grad: Tensor, max_kl: float, cg: CGResult | None = None
) -> NaturalDirection:
    """A :class:`NaturalDirection` from ``x ≈ F⁻¹g`` and ``xᵀFx`` computed elsewhere.

    The direction is unusable (``step_size`` 0) when ``xᵀFx`` is not a finite
    number > 0, ``x`` is not finite, ``cg`` diverged, or β would overflow.

    Raises:
        ValueError: ``max_kl`` is not a finite number > 0; ``x`` and ``grad``
            are not 1-d float vectors of one length; ``xfx`` is not a number.
    """
    _check_max_kl(max_kl)
    for name, t in (("x", x), ("grad", grad)):
        if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point():
            got = (tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 1-d floating-point tensor, got {got}")
    if x.shape != grad.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but grad has {tuple(grad.shape)}")
    if isinstance(xfx, Tensor) and xfx.numel() == 1:
        xfx = float(xfx)
    if isinstance(xfx, bool) or not isinstance(xfx, (int, float)):
        raise ValueError(f"xfx must be a number (xᵀFx), got {type(xfx).__name__}")
    if cg is None:
        cg = CGResult(x, 0, 0.0, True, False)
    unusable = NaturalDirection(x, 0.0, 0.0, cg)
    if not (xfx > 0 and math.isfinite(xfx)) or cg.diverged or not bool(torch.isfinite(x).all()):
        return unusable
    beta = math.sqrt(2.0 * max_kl / xfx)
    gx = float(grad @ x)
    if not (math.isfinite(beta) and math.isfinite(beta * gx)):
        return unusable
    return NaturalDirection(x, beta, beta * gx, cg)
