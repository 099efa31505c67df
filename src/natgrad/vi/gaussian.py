"""Gaussian variational families: diagonal and full covariance.

Both families describe ``q(z) = N(z; μ, Σ)`` over ``z ∈ R^d`` and are stored in
the *precision* parameterisation ``(μ, S = Σ⁻¹)``, which is what the
natural-gradient update in :mod:`natgrad.vi.ngvi` acts on. They expose three
coordinate systems:

* moments ``(μ, Σ)``;
* natural parameters ``η1 = Σ⁻¹ μ``, ``η2 = −½ Σ⁻¹``, from the exponential-family
  form ``q(z) ∝ exp(η1ᵀ z + zᵀ η2 z)``;
* mean (expectation) parameters ``m1 = E[z] = μ``, ``m2 = E[z zᵀ] = Σ + μ μᵀ``.

For :class:`DiagGaussianQ` every matrix above is diagonal and is stored as the
vector of its diagonal (``η2`` and ``m2`` are then vectors, ``m2 = E[z ⊙ z]``).

Objects are immutable: updates build new instances.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DiagGaussianQ", "FullGaussianQ", "GaussianQ"]

_LOG_2PI = math.log(2.0 * math.pi)


def _as_vector(name: str, x: Tensor | object) -> Tensor:
    x = torch.as_tensor(x)
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor of shape (d,), got shape {tuple(x.shape)}; "
            "reshape it, e.g. with .reshape(-1)"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {x}; remove NaN/inf entries")
    return x


def _as_matrix(name: str, x: Tensor | object, d: int, like: Tensor) -> Tensor:
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if x.shape != (d, d):
        raise ValueError(
            f"{name} must have shape ({d}, {d}) to match a mean of dimension {d}, "
            f"got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {x}; remove NaN/inf entries")
    scale = float(x.abs().max().clamp_min(1.0))
    tol = math.sqrt(torch.finfo(x.dtype).eps) * scale
    asym = float((x - x.mT).abs().max())
    if asym > tol:
        raise ValueError(
            f"{name} must be symmetric, but max|A - Aᵀ| = {asym:.3g} > {tol:.3g}; "
            "pass (A + A.T) / 2"
        )
    return 0.5 * (x + x.mT)


def _cholesky_or_raise(name: str, x: Tensor) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(x)
    if int(info) != 0:
        min_eig = float(torch.linalg.eigvalsh(x).min())
        raise ValueError(
            f"{name} must be positive definite, but its smallest eigenvalue is {min_eig:.3g} "
            f"(Cholesky failed at minor {int(info)}); pass a symmetric positive definite "
            "matrix, e.g. add a small multiple of the identity"
        )
    return chol


def _standard_normal(
    sample_shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None
) -> Tensor:
    return torch.randn(
        (*sample_shape, like.shape[-1]), generator=generator, dtype=like.dtype, device=like.device
    )


class _GaussianBase:
    """Shared sampling / density code; subclasses define the square-root maps."""

    __slots__ = ()
    loc: Tensor

    @property
    def dim(self) -> int:
        """Dimension ``d`` of ``z``."""
        return int(self.loc.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.loc.dtype

    @property
    def device(self) -> torch.device:
        return self.loc.device

    @property
    def mean(self) -> Tensor:
        """``μ``, shape ``(d,)``."""
        return self.loc

    def transform(self, eps: Tensor) -> Tensor:
        """Reparameterisation map ``ε ↦ μ + Σ^{1/2} ε`` (``ε ~ N(0, I)``), batched over ``ε[..., d]``."""
        raise NotImplementedError

    def whiten(self, z: Tensor) -> Tensor:
        """``R (z − μ)`` with ``Rᵀ R = S``, so that ``‖R (z − μ)‖² = (z−μ)ᵀ S (z−μ)``."""
        raise NotImplementedError

    def log_det_precision(self) -> Tensor:
        """``log det S``."""
        raise NotImplementedError

    def _check_z(self, z: Tensor) -> Tensor:
        z = torch.as_tensor(z, dtype=self.dtype, device=self.device)
        if z.ndim == 0 or z.shape[-1] != self.dim:
            raise ValueError(
                f"z must have shape (..., {self.dim}) for a q of dimension {self.dim}, "
                f"got shape {tuple(z.shape)}"
            )
        return z

    def rsample(
        self,
        sample_shape: tuple[int, ...] | torch.Size = (),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Reparameterised draws ``z = μ + Σ^{1/2} ε``, shape ``(*sample_shape, d)``.

        Differentiable with respect to the parameters when they require grad.
        """
        return self.transform(_standard_normal(tuple(sample_shape), self.loc, generator))

    def sample(
        self,
        sample_shape: tuple[int, ...] | torch.Size = (),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws without gradient tracking, shape ``(*sample_shape, d)``."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """``log q(z) = ½ log det S − ½ (z−μ)ᵀ S (z−μ) − (d/2) log 2π``; ``z[..., d] → [...]``."""
        w = self.whiten(self._check_z(z))
        return 0.5 * self.log_det_precision() - 0.5 * w.square().sum(-1) - 0.5 * self.dim * _LOG_2PI

    def entropy(self) -> Tensor:
        """``H[q] = (d/2)(1 + log 2π) − ½ log det S``."""
        return 0.5 * self.dim * (1.0 + _LOG_2PI) - 0.5 * self.log_det_precision()


class DiagGaussianQ(_GaussianBase):
    """Mean-field Gaussian ``q(z) = N(μ, diag(1/s))`` with precision vector ``s > 0``.

    Natural parameters ``η1 = s ⊙ μ``, ``η2 = −½ s``; mean parameters ``m1 = μ``,
    ``m2 = E[z ⊙ z] = 1/s + μ²``.

    Args:
        loc: mean ``μ``, shape ``(d,)``.
        precision: diagonal precision ``s``, shape ``(d,)``, strictly positive.

    Raises:
        ValueError: on shape mismatch, non-finite entries or ``s ≤ 0``.

    Example:
        >>> q = DiagGaussianQ.from_variance(torch.zeros(2), torch.tensor([1.0, 4.0]))
        >>> q.precision
        tensor([1.0000, 0.2500])
        >>> DiagGaussianQ.from_natural(*q.natural_params()).variance
        tensor([1., 4.])
    """

    __slots__ = ("loc", "precision")

    def __init__(self, loc: Tensor, precision: Tensor) -> None:
        loc = _as_vector("loc", loc)
        precision = _as_vector("precision", precision).to(dtype=loc.dtype, device=loc.device)
        if precision.shape != loc.shape:
            raise ValueError(
                f"precision must have shape {tuple(loc.shape)} like loc, got {tuple(precision.shape)}"
            )
        if not bool((precision > 0).all()):
            raise ValueError(
                f"precision must be strictly positive (a diagonal PD matrix), got min "
                f"{float(precision.min()):.3g}; pass positive precisions (1 / variance)"
            )
        if not bool(torch.isfinite(precision.reciprocal()).all()):
            raise ValueError(
                f"precision has entries so small (min {float(precision.min()):.3g}) that the "
                f"variance 1/precision overflows {precision.dtype}"
            )
        self.loc = loc
        self.precision = precision

    @classmethod
    def _unchecked(cls, loc: Tensor, precision: Tensor) -> DiagGaussianQ:
        obj = cls.__new__(cls)
        obj.loc, obj.precision = loc, precision
        return obj

    @classmethod
    def from_variance(cls, loc: Tensor, variance: Tensor) -> DiagGaussianQ:
        """Build from ``μ`` and the variance vector ``σ² > 0``."""
        variance = _as_vector("variance", variance)
        if not bool((variance > 0).all()):
            raise ValueError(
                f"variance must be strictly positive, got min {float(variance.min()):.3g}"
            )
        return cls(loc, 1.0 / variance)

    @classmethod
    def from_natural(cls, eta1: Tensor, eta2: Tensor) -> DiagGaussianQ:
        """Inverse of :meth:`natural_params`: ``s = −2 η2``, ``μ = η1 / s``."""
        eta1 = _as_vector("eta1", eta1)
        eta2 = _as_vector("eta2", eta2).to(eta1)
        if not bool((eta2 < 0).all()):
            raise ValueError(
                f"eta2 = -precision/2 must be strictly negative, got max {float(eta2.max()):.3g}"
            )
        s = -2.0 * eta2
        return cls(eta1 / s, s)

    @classmethod
    def from_mean_params(cls, m1: Tensor, m2: Tensor) -> DiagGaussianQ:
        """Inverse of :meth:`mean_params`: ``σ² = m2 − m1²`` must be positive."""
        m1 = _as_vector("m1", m1)
        m2 = _as_vector("m2", m2).to(m1)
        var = m2 - m1.square()
        if not bool((var > 0).all()):
            raise ValueError(
                f"m2 - m1**2 (the variance) must be positive, got min {float(var.min()):.3g}"
            )
        return cls(m1, 1.0 / var)

    @property
    def variance(self) -> Tensor:
        """``σ² = 1/s``, shape ``(d,)``."""
        return 1.0 / self.precision

    @property
    def scale(self) -> Tensor:
        """``σ``, shape ``(d,)``."""
        return self.precision.rsqrt()

    @property
    def covariance(self) -> Tensor:
        """``diag(σ²)``, shape ``(d, d)``."""
        return torch.diag(self.variance)

    @property
    def precision_matrix(self) -> Tensor:
        """``diag(s)``, shape ``(d, d)``."""
        return torch.diag(self.precision)

    def natural_params(self) -> tuple[Tensor, Tensor]:
        """``(η1, η2) = (s ⊙ μ, −½ s)``."""
        return self.precision * self.loc, -0.5 * self.precision

    def mean_params(self) -> tuple[Tensor, Tensor]:
        """``(m1, m2) = (μ, 1/s + μ²)``."""
        return self.loc, self.variance + self.loc.square()

    def transform(self, eps: Tensor) -> Tensor:
        return self.loc + eps * self.scale

    def whiten(self, z: Tensor) -> Tensor:
        return (z - self.loc) * self.precision.sqrt()

    def log_det_precision(self) -> Tensor:
        return self.precision.log().sum()

    def __repr__(self) -> str:
        return f"DiagGaussianQ(dim={self.dim}, loc={self.loc}, precision={self.precision})"


class FullGaussianQ(_GaussianBase):
    """Full-covariance Gaussian ``q(z) = N(μ, S⁻¹)`` in the precision parameterisation.

    The Cholesky factor ``S = L Lᵀ`` is cached: sampling solves ``Lᵀ x = ε``
    (``Cov[x] = L⁻ᵀ L⁻¹ = S⁻¹``) and ``log det S = 2 Σ log L_ii``.

    Args:
        loc: mean ``μ``, shape ``(d,)``.
        precision: symmetric positive definite ``S``, shape ``(d, d)``.

    Raises:
        ValueError: on shape mismatch, non-finite entries, asymmetry or a matrix that
            is not positive definite.

    Example:
        >>> q = FullGaussianQ.from_covariance(torch.zeros(2), torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
        >>> eta1, eta2 = q.natural_params()
        >>> torch.allclose(FullGaussianQ.from_natural(eta1, eta2).covariance, q.covariance)
        True
    """

    __slots__ = ("loc", "precision", "precision_cholesky")

    def __init__(self, loc: Tensor, precision: Tensor) -> None:
        loc = _as_vector("loc", loc)
        precision = _as_matrix("precision", precision, loc.shape[0], loc)
        self.loc = loc
        self.precision = precision
        self.precision_cholesky = _cholesky_or_raise("precision", precision)

    @classmethod
    def _unchecked(cls, loc: Tensor, precision: Tensor, chol: Tensor) -> FullGaussianQ:
        obj = cls.__new__(cls)
        obj.loc, obj.precision, obj.precision_cholesky = loc, precision, chol
        return obj

    @classmethod
    def from_covariance(cls, loc: Tensor, covariance: Tensor) -> FullGaussianQ:
        """Build from ``μ`` and a symmetric positive definite covariance ``Σ``."""
        loc = _as_vector("loc", loc)
        cov = _as_matrix("covariance", covariance, loc.shape[0], loc)
        chol = _cholesky_or_raise("covariance", cov)
        return cls(loc, torch.cholesky_inverse(chol))

    @classmethod
    def from_scale_tril(cls, loc: Tensor, scale_tril: Tensor) -> FullGaussianQ:
        """Build from ``μ`` and a lower-triangular ``C`` with ``Σ = C Cᵀ`` and ``C_ii > 0``."""
        loc = _as_vector("loc", loc)
        c = torch.as_tensor(scale_tril, dtype=loc.dtype, device=loc.device)
        d = loc.shape[0]
        if c.shape != (d, d) or not bool(torch.isfinite(c).all()):
            raise ValueError(f"scale_tril must be a finite ({d}, {d}) matrix, got {tuple(c.shape)}")
        if not bool((c.diagonal() > 0).all()):
            raise ValueError(
                f"scale_tril must have a positive diagonal, got min {float(c.diagonal().min()):.3g}"
            )
        c = torch.tril(c)
        return cls(loc, torch.cholesky_inverse(c))

    @classmethod
    def from_natural(cls, eta1: Tensor, eta2: Tensor) -> FullGaussianQ:
        """Inverse of :meth:`natural_params`: ``S = −2 η2``, ``μ = S⁻¹ η1``."""
        eta1 = _as_vector("eta1", eta1)
        s = -2.0 * _as_matrix("eta2", eta2, eta1.shape[0], eta1)
        chol = _cholesky_or_raise("-2 * eta2 (the precision)", s)
        return cls._unchecked(torch.cholesky_solve(eta1[:, None], chol)[:, 0], s, chol)

    @classmethod
    def from_mean_params(cls, m1: Tensor, m2: Tensor) -> FullGaussianQ:
        """Inverse of :meth:`mean_params`: ``Σ = m2 − m1 m1ᵀ`` must be positive definite."""
        m1 = _as_vector("m1", m1)
        m2 = _as_matrix("m2", m2, m1.shape[0], m1)
        return cls.from_covariance(m1, m2 - torch.outer(m1, m1))

    @property
    def covariance(self) -> Tensor:
        """``Σ = S⁻¹``, shape ``(d, d)``."""
        return torch.cholesky_inverse(self.precision_cholesky)

    @property
    def variance(self) -> Tensor:
        """Marginal variances ``diag Σ``, shape ``(d,)``."""
        return self.covariance.diagonal()

    @property
    def scale_tril(self) -> Tensor:
        """Lower Cholesky factor ``C`` of the covariance, ``Σ = C Cᵀ``."""
        return torch.linalg.cholesky(self.covariance)

    @property
    def precision_matrix(self) -> Tensor:
        """``S``, shape ``(d, d)`` (same as :attr:`precision`)."""
        return self.precision

    def natural_params(self) -> tuple[Tensor, Tensor]:
        """``(η1, η2) = (S μ, −½ S)``."""
        return self.precision @ self.loc, -0.5 * self.precision

    def mean_params(self) -> tuple[Tensor, Tensor]:
        """``(m1, m2) = (μ, Σ + μ μᵀ)``."""
        return self.loc, self.covariance + torch.outer(self.loc, self.loc)

    def transform(self, eps: Tensor) -> Tensor:
        # x = L^{-T} eps for every row of eps: solve x L^T ... i.e. x^T = L^{-T} eps^T.
        flat = eps.reshape(-1, self.dim)
        x = torch.linalg.solve_triangular(self.precision_cholesky.mT, flat.mT, upper=True).mT
        return self.loc + x.reshape(eps.shape)

    def whiten(self, z: Tensor) -> Tensor:
        return (z - self.loc) @ self.precision_cholesky  # row form of Lᵀ (z − μ)

    def log_det_precision(self) -> Tensor:
        return 2.0 * self.precision_cholesky.diagonal().log().sum()

    def __repr__(self) -> str:
        return f"FullGaussianQ(dim={self.dim}, loc={self.loc}, precision={self.precision})"


GaussianQ = DiagGaussianQ | FullGaussianQ
"""Either Gaussian family."""
