"""Conjugate gradient and a direct solve for ``A x = b`` with A symmetric positive definite.

CG only sees ``A`` through a matrix-vector product, so it never knows which
matrix it solves (the Fisher, a damped Fisher, a dense test matrix).  A
failure is data: the caller reads :class:`CGResult` and decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CGResult:
    """The outcome of a conjugate-gradient solve.

    Attributes:
        x: The last iterate (the best estimate of ``A⁻¹ b``).
        iterations: Number of matrix-vector products spent on iterations.
        residual_norm: ``‖b − A x‖`` as tracked by the recurrence.
        converged: ``residual_norm ≤ max(rtol·‖b‖, atol)``.
        breakdown: A search direction had ``pᵀ A p ≤ 0`` (or non-finite):
            ``A`` is not positive definite along it (negative curvature), the
            case behind NaN steps in other TRPO codes.  ``x`` is then the last
            iterate before the breakdown.
        residual: The residual vector ``b − A x`` by the recurrence (so
            ``xᵀ A x = xᵀ (b − residual)`` costs no product); None if not tracked.
    """

    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool
    breakdown: bool
    residual: Tensor | None = None

    @property
    def status(self) -> str:
        """``"converged"``, ``"breakdown"`` or ``"max_iter"``: a one-word summary."""
        if self.breakdown:
            return "breakdown"
        return "converged" if self.converged else "max_iter"


def _check_vector(name: str, v: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dim() != 1:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{name} must be a 1-d tensor, got {shape}; flatten it first")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf; CG needs a finite right-hand side")


def cg(
    matvec: MatVec,
    b: Tensor,
    *,
    x0: Tensor | None = None,
    max_iter: int | None = None,
    rtol: float = 1e-10,
    atol: float = 0.0,
    preconditioner: MatVec | None = None,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` by (preconditioned) CG.

    Args:
        matvec: ``v ↦ A v`` for 1-d tensors.
        b: Right-hand side, a 1-d tensor.
        x0: Starting point (zeros by default, as TRPO uses).
        max_iter: Maximum number of iterations (default ``len(b)``).
        rtol: Stop when ``‖r‖ ≤ rtol·‖b‖``.
        atol: ... or when ``‖r‖ ≤ atol``.
        preconditioner: ``r ↦ M⁻¹ r`` for an SPD ``M ≈ A``.

    Returns:
        A :class:`CGResult`; a breakdown or too few iterations is reported, never raised.

    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> r = cg(lambda v: A @ v, b)
    >>> r.converged, r.iterations, torch.allclose(A @ r.x, b)
    (True, 2, True)
    """
    _check_vector("b", b)
    n = b.shape[0]
    if max_iter is None:
        max_iter = n
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    if not (rtol >= 0 and atol >= 0) or math.isnan(rtol) or math.isnan(atol):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        _check_vector("x0", x0)
        if x0.shape != b.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)} but b has {tuple(b.shape)}")
        x = x0.clone()
        r = b - matvec(x)
    tol = max(rtol * float(b.norm()), atol)
    z = preconditioner(r) if preconditioner is not None else r
    p = z.clone()
    rz = float(r @ z)
    rnorm = float(r.norm())
    it = 0
    breakdown = False
    while rnorm > tol and it < max_iter:
        ap = matvec(p)
        curvature = float(p @ ap)
        if not (curvature > 0.0) or not math.isfinite(curvature):
            breakdown = True
            break
        alpha = rz / curvature
        x.add_(p, alpha=alpha)
        r.sub_(ap, alpha=alpha)
        it += 1
        rnorm = float(r.norm())
        if not math.isfinite(rnorm):
            breakdown = True
            break
        z = preconditioner(r) if preconditioner is not None else r
        rz_new = float(r @ z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    return CGResult(
        x=x,
        iterations=it,
        residual_norm=rnorm,
        converged=rnorm <= tol,
        breakdown=breakdown,
        residual=r,
    )


def solve_dense(matrix: Tensor, b: Tensor, *, damping: float = 0.0) -> Tensor:
    """The seed's ``natural_grad = inverse(fisher) * grad``, done as a solve.

    Solves ``(matrix + damping·I) x = b`` with a Cholesky factorisation when the
    matrix is positive definite, and a general LU solve otherwise.  Never
    forms the inverse.

    >>> solve_dense(torch.eye(2) * 2, torch.ones(2))
    tensor([0.5000, 0.5000])
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
    if b.shape[-1] != matrix.shape[0]:
        raise ValueError(
            f"b has length {b.shape[-1]} but matrix is {matrix.shape[0]}x{matrix.shape[0]}"
        )
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    a = matrix + damping * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    return torch.linalg.solve(a, b)
