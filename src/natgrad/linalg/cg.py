"""Conjugate gradient and a direct solve for ``A x = b`` with A symmetric positive definite.

CG only sees ``A`` through a matrix-vector product, so it never knows which
matrix it solves (the Fisher, a damped Fisher, a dense test matrix).  A
failure is data: the caller reads :class:`CGResult` and decides.  Bad
*arguments* (a NaN right-hand side, a negative tolerance, a product of the
wrong shape) raise ``ValueError`` naming the argument.
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
        converged: ``residual_norm ≤ max(rtol·‖b‖, atol)`` (and not ``diverged``).
        breakdown: CG could not go on: a search direction had ``pᵀ A p ≤ 0`` or
            non-finite (negative curvature: ``A`` is not positive definite, the
            case behind NaN steps in other TRPO codes), or a curvature at the
            rounding level, ``pᵀAp ≤ ε·μ_max·pᵀp`` with ``μ_max`` the largest
            ``pᵀAp/pᵀp`` seen (``A`` numerically singular along ``p``), or
            ``rᵀ M⁻¹ r ≤ 0`` (the preconditioner is not positive definite).
            ``x`` is then the last iterate before the breakdown.
        residual: The residual vector ``b − A x`` by the recurrence (so
            ``xᵀ A x = xᵀ (b − residual)`` costs no product); None if not tracked.
        diverged: The iterate is larger than the solution of any numerically
            non-singular system could be: ``ε·μ_max·‖x − x₀‖ > ‖b − A x₀‖``.
            For SPD ``A``, ``‖x_k − x₀‖ ≤ ‖r₀‖/λ_min`` and ``μ_max ≤ λ_max``, so
            this certifies a condition number above ``1/ε``: typically a
            singular ``A`` with ``b`` outside its range.  No digit of ``x`` can
            then be trusted; :func:`~natgrad.linalg.natural_direction` refuses it.
    """

    x: Tensor
    iterations: int
    residual_norm: float
    converged: bool
    breakdown: bool
    residual: Tensor | None = None
    diverged: bool = False

    @property
    def status(self) -> str:
        """``"converged"``, ``"breakdown"``, ``"diverged"`` or ``"max_iter"``: one word."""
        if self.breakdown:
            return "breakdown"
        if self.diverged:
            return "diverged"
        return "converged" if self.converged else "max_iter"


def _check_vector(name: str, v: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dim() != 1:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{name} must be a 1-d tensor, got {shape}; flatten it first")
    if not v.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf; CG needs a finite right-hand side")


def _check_tol(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}; 1e-10 is usual")
    return float(value)


def _apply(fn: MatVec, v: Tensor, name: str) -> Tensor:
    out = fn(v)
    if not isinstance(out, Tensor) or out.shape != v.shape or out.dtype != v.dtype:
        got = (tuple(out.shape), out.dtype) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{name} returned {got} for a vector of shape {tuple(v.shape)} and dtype "
            f"{v.dtype}; it must return a vector of the same shape and dtype"
        )
    return out


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
        b: Right-hand side, a finite 1-d floating-point tensor.
        x0: Starting point (zeros by default, as TRPO uses).
        max_iter: Maximum number of iterations (default ``len(b)``).
        rtol: Stop when ``‖r‖ ≤ rtol·‖b‖``.
        atol: ... or when ``‖r‖ ≤ atol``.
        preconditioner: ``r ↦ M⁻¹ r`` for an SPD ``M ≈ A``.

    Returns:
        A :class:`CGResult`; a breakdown, a diverging iterate or too few
        iterations is reported, never raised.

    Raises:
        ValueError: a bad argument (``b`` or ``x0`` not a finite 1-d float
            vector, a negative or non-finite tolerance, ``max_iter < 0``) or a
            ``matvec``/``preconditioner`` that returns the wrong shape.

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
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    rtol, atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
    if not callable(matvec):
        raise ValueError(f"matvec must be a callable v -> A v, got {type(matvec).__name__}")
    if preconditioner is not None and not callable(preconditioner):
        raise ValueError(
            f"preconditioner must be a callable r -> M⁻¹ r or None, got "
            f"{type(preconditioner).__name__}"
        )
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        _check_vector("x0", x0)
        if x0.shape != b.shape or x0.dtype != b.dtype:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)} and dtype {x0.dtype} but b has "
                f"{tuple(b.shape)} and {b.dtype}"
            )
        x = x0.clone()
        r = b - _apply(matvec, x, "matvec")
    r0norm = rnorm = float(r.norm())
    if not math.isfinite(rnorm):  # A x0 was not finite
        return CGResult(x, 0, math.inf, False, True, r)
    tol = max(rtol * float(b.norm()), atol)
    eps = torch.finfo(b.dtype).eps
    it, breakdown, mu_max = 0, False, 0.0
    if rnorm > tol and max_iter > 0:
        z = _apply(preconditioner, r, "preconditioner") if preconditioner is not None else r
        rz = float(r @ z)
        breakdown = not (0 < rz < math.inf)
        p = z.clone()
        while not breakdown and rnorm > tol and it < max_iter:
            pp = float(p @ p)
            if not (0 < pp < math.inf):
                breakdown = True
                break
            ap = _apply(matvec, p, "matvec")
            curvature = float(p @ ap)
            if not (0 < curvature < math.inf):
                breakdown = True  # negative (or zero, or non-finite) curvature
                break
            mu = curvature / pp
            mu_max = max(mu_max, mu)
            if mu <= eps * mu_max:
                breakdown = True  # curvature at the rounding level: A singular along p
                break
            alpha = rz / curvature
            r_new = r - alpha * ap
            rnorm_new = float(r_new.norm())
            if not math.isfinite(rnorm_new):
                breakdown = True
                break
            x.add_(p, alpha=alpha)
            r, rnorm = r_new, rnorm_new
            it += 1
            if rnorm <= tol or it >= max_iter:
                break
            z = _apply(preconditioner, r, "preconditioner") if preconditioner is not None else r
            rz_new = float(r @ z)
            if not (0 < rz_new < math.inf):
                breakdown = True  # the preconditioner is not positive definite along r
                break
            p.mul_(rz_new / rz).add_(z)
            rz = rz_new
    step = x if x0 is None else x - x0
    diverged = it > 0 and eps * mu_max * float(step.norm()) > r0norm
    return CGResult(
        x=x,
        iterations=it,
        residual_norm=rnorm,
        converged=rnorm <= tol and not diverged,
        breakdown=breakdown,
        residual=r,
        diverged=diverged,
    )


def _check_damping(damping: float, dtype: torch.dtype) -> float:
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float))
        or not 0 <= damping <= torch.finfo(dtype).max
    ):
        raise ValueError(
            f"damping must be a finite number >= 0 (representable in {dtype}), got "
            f"{damping!r}; try 1e-3"
        )
    return float(damping)


def solve_dense(matrix: Tensor, b: Tensor, *, damping: float = 0.0) -> Tensor:
    """The seed's ``natural_grad = inverse(fisher) * grad``, done as a solve.

    Solves ``(matrix + damping·I) x = b`` with a Cholesky factorisation when the
    matrix is positive definite, and a general LU solve otherwise.  Never
    forms the inverse.

    Raises:
        ValueError: ``matrix`` is not square, or ``b`` does not fit it; either
            holds NaN or inf; ``damping`` is negative, NaN or inf; or the damped
            matrix is singular (no solution to return).

    >>> solve_dense(torch.eye(2) * 2, torch.ones(2))
    tensor([0.5000, 0.5000])
    """
    for name, t in (("matrix", matrix), ("b", b)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating-point tensor, got {got}")
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
    if b.dim() < 1 or b.shape[-1] != matrix.shape[0]:
        raise ValueError(
            f"b has shape {tuple(b.shape)} but matrix is {matrix.shape[0]}x{matrix.shape[0]}; "
            f"b must have length {matrix.shape[0]}"
        )
    if b.dtype != matrix.dtype:
        raise ValueError(f"b has dtype {b.dtype} but matrix has {matrix.dtype}")
    damping = _check_damping(damping, matrix.dtype)
    for name, t in (("matrix", matrix), ("b", b)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    a = matrix + damping * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        x = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    else:
        lu, pivots, info = torch.linalg.lu_factor_ex(a)
        if int(info) != 0:
            raise ValueError(f"matrix + damping·I is singular (damping={damping}); use damping > 0")
        x = torch.linalg.lu_solve(lu, pivots, b.unsqueeze(-1)).squeeze(-1)
    if not torch.isfinite(x).all():
        raise ValueError(
            f"matrix + damping·I is numerically singular (damping={damping}): the solution "
            "overflows; use a larger damping"
        )
    return x
