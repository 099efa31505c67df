"""Monte Carlo / cubature estimates of Gaussian expectations used by NG-VI.

For ``q = N(μ, Σ)`` and a log-joint ``f(z) = log p(z)`` the natural-gradient
update needs

* ``ḡ = E_q[∇f(z)]`` (Bonnet's identity: ``∇_μ E_q[f] = ḡ``),
* ``H̄ = E_q[∇²f(z)]`` (Price's identity: ``∇_Σ E_q[f] = ½ H̄``),

and the ELBO ``L(q) = E_q[f(z) − log q(z)]``. All are estimated from points
``z_i = μ + Σ^{1/2} ε_i`` with one of three point sets:

* ``n_samples=k`` with ``antithetic=True`` (default): ``k`` standard-normal draws
  ``ε`` and their mirrors ``−ε`` (``2k`` evaluations). The pairs make ``ḡ`` and
  ``H̄`` exact whenever ``f`` is quadratic (a Gaussian log-joint), for any ``k``.
* ``n_samples=k`` with ``antithetic=False``: ``k`` plain Monte Carlo draws.
* ``n_samples=None``: the deterministic ``2d``-point spherical cubature rule
  ``ε ∈ {±√d e_j}`` with equal weights. It integrates polynomials of degree ≤ 3
  exactly, so ``ḡ`` and ``H̄`` are exact for log-joints of degree ≤ 4 and the
  ELBO for degree ≤ 3; otherwise it is a deterministic approximation.

The Hessian term comes either from autograd (``hessian="autograd"``, ``d`` extra
backward passes) or from Stein's lemma ``E[∇²f] = S E[(z − μ) ∇f(z)ᵀ]``
(``hessian="stein"``, first derivatives only; noisier).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from natgrad.vi.gaussian import DiagGaussianQ, FullGaussianQ, GaussianQ

__all__ = [
    "GaussianExpectations",
    "LogJoint",
    "call_log_joint",
    "check_n_samples",
    "elbo",
    "expected_derivatives",
    "standard_points",
]

LogJoint = Callable[[Tensor], Tensor]
"""``log_joint(z[..., d]) -> Tensor[...]``: unnormalised log density, batched over leading dims."""

_HESSIAN_METHODS = ("autograd", "stein")


def check_n_samples(n_samples: int | None) -> None:
    """Raise ``ValueError`` unless ``n_samples`` is ``None`` or an integer ``≥ 1``."""
    if n_samples is None:
        return
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(
            f"n_samples must be a positive integer or None (deterministic cubature), "
            f"got {n_samples!r}; use e.g. n_samples=1"
        )


def standard_points(
    dim: int,
    n_samples: int | None,
    *,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard-normal evaluation points ``ε``, shape ``(m, dim)``, all equally weighted.

    Args:
        dim: dimension ``d``.
        n_samples: number of draws, or ``None`` for the ``2d``-point cubature rule.
        antithetic: append ``−ε`` to the draws (ignored for ``None``, which is symmetric).
        generator: torch generator for reproducible draws.
        dtype: floating dtype of the points.
        device: device of the points.

    Returns:
        ``m = 2 n_samples`` (antithetic), ``n_samples`` or ``2 dim`` (cubature) points.

    Example:
        >>> standard_points(2, None)
        tensor([[ 1.4142,  0.0000],
                [ 0.0000,  1.4142],
                [-1.4142, -0.0000],
                [-0.0000, -1.4142]], dtype=torch.float64)
    """
    check_n_samples(n_samples)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if n_samples is None:
        eye = math.sqrt(dim) * torch.eye(dim, dtype=dtype, device=device)
        return torch.cat([eye, -eye])
    eps = torch.randn(n_samples, dim, generator=generator, dtype=dtype, device=device)
    return torch.cat([eps, -eps]) if antithetic else eps


def call_log_joint(log_joint: LogJoint, z: Tensor) -> Tensor:
    """Evaluate ``log_joint`` on a batch ``z[m, d]`` and check it returns shape ``(m,)``.

    Raises:
        ValueError: if ``log_joint`` fails on ``z`` (typically a dimension mismatch between
            ``q`` and the model) or returns anything but one value per row of ``z``.
    """
    try:
        out = log_joint(z)
    except (RuntimeError, IndexError) as err:
        raise ValueError(
            f"log_joint failed on a batch z of shape {tuple(z.shape)} (q has dimension "
            f"{z.shape[-1]}); check that q's dimension matches the model's and that "
            f"log_joint is batched over leading dimensions: {err}"
        ) from err
    if not isinstance(out, Tensor) or out.shape != z.shape[:-1]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"log_joint(z) must return one value per sample, shape {tuple(z.shape[:-1])} for "
            f"z of shape {tuple(z.shape)}, got {shape}; reduce over the data, not over samples "
            "(e.g. .sum(-1) rather than .sum())"
        )
    return out


@dataclass(frozen=True)
class GaussianExpectations:
    """Estimated expectations under ``q`` (all detached).

    Attributes:
        elbo: ``mean_i [f(z_i) − log q(z_i)]``, scalar.
        grad: ``ḡ ≈ E_q[∇f]``, shape ``(d,)``.
        hess: ``H̄ ≈ E_q[∇²f]``: shape ``(d, d)``, or ``(d,)`` (its diagonal) if ``diagonal``.
        n_evals: number of log-joint evaluations.
        finite: whether every estimate is finite.
    """

    elbo: Tensor
    grad: Tensor
    hess: Tensor
    n_evals: int
    finite: bool


def _check_method(hessian: str) -> None:
    if hessian not in _HESSIAN_METHODS:
        raise ValueError(f"hessian must be one of {_HESSIAN_METHODS}, got {hessian!r}")


def _check_q(q: object) -> None:
    if not isinstance(q, DiagGaussianQ | FullGaussianQ):
        raise ValueError(
            f"q must be a DiagGaussianQ or FullGaussianQ, got {type(q).__name__}; "
            "build one with e.g. FullGaussianQ(torch.zeros(d), torch.eye(d))"
        )


def expected_derivatives(
    log_joint: LogJoint,
    q: GaussianQ,
    *,
    n_samples: int | None = 1,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    hessian: str = "autograd",
    diagonal: bool | None = None,
) -> GaussianExpectations:
    """Estimate ``E_q[∇f]``, ``E_q[∇²f]`` and the ELBO from one shared set of points.

    Args:
        log_joint: ``f``, batched: ``z[m, d] -> [m]``.
        q: the Gaussian under which expectations are taken.
        n_samples: draws (see :func:`standard_points`), ``None`` for cubature.
        generator: torch generator for the draws.
        antithetic: mirror every draw.
        hessian: ``"autograd"`` (exact per-point Hessians) or ``"stein"``
            (``S (z − μ) ∇f(z)ᵀ``, symmetrised).
        diagonal: only estimate ``diag H̄``; defaults to ``isinstance(q, DiagGaussianQ)``.

    Returns:
        A :class:`GaussianExpectations`.

    Raises:
        ValueError: on bad ``n_samples``, ``hessian``, ``q`` or log-joint output shape.
    """
    _check_q(q)
    _check_method(hessian)
    if diagonal is None:
        diagonal = isinstance(q, DiagGaussianQ)
    eps = standard_points(
        q.dim, n_samples, antithetic=antithetic, generator=generator, dtype=q.dtype, device=q.device
    )
    m, d = eps.shape
    with torch.no_grad():
        z0 = q.transform(eps)
    z = z0.detach().requires_grad_(True)
    need_graph = hessian == "autograd"
    with torch.enable_grad():
        f = call_log_joint(log_joint, z)
        if f.requires_grad:
            (g,) = torch.autograd.grad(f.sum(), z, create_graph=need_graph, materialize_grads=True)
        else:
            g = torch.zeros_like(z)
        if hessian == "autograd":
            h = _autograd_hessian_mean(g, z, diagonal)
        else:
            h = _stein_hessian_mean(q, z.detach(), g.detach(), diagonal)
    with torch.no_grad():
        value = (f.detach() - q.log_prob(z.detach())).mean()
        grad = g.detach().mean(0)
    finite = bool(torch.isfinite(value) and torch.isfinite(grad).all() and torch.isfinite(h).all())
    return GaussianExpectations(elbo=value, grad=grad, hess=h, n_evals=m, finite=finite)


def _autograd_hessian_mean(g: Tensor, z: Tensor, diagonal: bool) -> Tensor:
    """Mean over the batch of per-point Hessians, one backward pass per coordinate.

    Because ``log_joint`` treats rows independently, ``∂(Σ_i g_ij)/∂z_i = ∇² f(z_i)[j, :]``.
    """
    m, d = z.shape
    rows = []
    for j in range(d):
        if g.requires_grad:
            (hj,) = torch.autograd.grad(
                g[:, j].sum(), z, retain_graph=j < d - 1, materialize_grads=True
            )
        else:  # log-joint linear in z: zero Hessian
            hj = torch.zeros_like(z)
        rows.append(hj[:, j].mean() if diagonal else hj.mean(0))
    h = torch.stack(rows).detach()
    return h if diagonal else 0.5 * (h + h.mT)


def _stein_hessian_mean(q: GaussianQ, z: Tensor, g: Tensor, diagonal: bool) -> Tensor:
    """Stein's lemma estimate ``S E[(z − μ) ∇f(z)ᵀ]`` (symmetrised)."""
    dz = z - q.loc
    if isinstance(q, DiagGaussianQ):
        sdz = dz * q.precision
        if diagonal:
            return (sdz * g).mean(0)
        h = sdz.mT @ g / z.shape[0]
    else:
        sdz = dz @ q.precision
        h = sdz.mT @ g / z.shape[0]
        if diagonal:
            return h.diagonal().clone()
    return 0.5 * (h + h.mT)


def elbo(
    log_joint: LogJoint,
    q: GaussianQ,
    *,
    n_samples: int | None = 256,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
) -> Tensor:
    """Estimate ``L(q) = E_q[log p(z) − log q(z)]`` (no gradients).

    The estimator averages ``log p(z_i) − log q(z_i)``; at the exact posterior this
    ratio is the constant ``log p(data)``, so the estimate is then exact for any
    sample.  It is ``-inf`` when ``log_joint`` is ``-inf`` at a point (``q``
    puts mass where ``p`` has none).

    Raises:
        ValueError: bad ``q``/``n_samples``, or ``log_joint`` returned NaN or
            ``+inf`` at some point (no ELBO to estimate).

    Example:
        >>> q = FullGaussianQ(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        >>> float(elbo(q.log_prob, q, n_samples=4))  # KL(q||q) = 0, evidence 1
        0.0
    """
    _check_q(q)
    eps = standard_points(
        q.dim, n_samples, antithetic=antithetic, generator=generator, dtype=q.dtype, device=q.device
    )
    with torch.no_grad():
        z = q.transform(eps)
        f = call_log_joint(log_joint, z)
        if bool(torch.isnan(f).any() | (f == math.inf).any()):
            raise ValueError(
                "log_joint returned NaN or +inf at some of the points z drawn from q; "
                "check the model (an unnormalisable or undefined log density has no ELBO)"
            )
        return (f - q.log_prob(z)).mean()
