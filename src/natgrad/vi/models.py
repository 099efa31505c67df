"""Small Bayesian models with batched log-joints, for tests, examples and docs.

* :class:`BayesianLinearRegression`: ``y = X w + ε``, ``ε ~ N(0, σ² I)``, prior
  ``w ~ N(0, τ² I)``. The posterior is Gaussian with precision
  ``A = XᵀX / σ² + I / τ²`` and mean ``A⁻¹ Xᵀ y / σ²``; the evidence is
  ``y ~ N(0, τ² X Xᵀ + σ² I)``.
* :class:`BayesianLogisticRegression`: ``y_n ~ Bernoulli(sigmoid(x_nᵀ w))`` with prior
  ``w ~ N(0, τ² I)``.

Each model instance is itself the log-joint: ``model(z[..., d]) -> [...]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from natgrad.vi.gaussian import DiagGaussianQ, FullGaussianQ, GaussianQ

__all__ = ["BayesianLinearRegression", "BayesianLogisticRegression"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_data(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    X = torch.as_tensor(X)
    if not torch.is_floating_point(X):
        X = X.to(torch.get_default_dtype())
    y = torch.as_tensor(y, dtype=X.dtype, device=X.device)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty (n, d) matrix, got shape {tuple(X.shape)}")
    if y.shape != (X.shape[0],):
        raise ValueError(
            f"y must have shape ({X.shape[0]},) to match X of shape {tuple(X.shape)}, "
            f"got {tuple(y.shape)}"
        )
    if not bool(torch.isfinite(X).all() and torch.isfinite(y).all()):
        raise ValueError("X and y must be finite; remove NaN/inf rows")
    return X, y


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_z(z: Tensor, d: int) -> None:
    if z.ndim == 0 or z.shape[-1] != d:
        raise ValueError(
            f"z must have shape (..., {d}) for a model with {d} weights, got {tuple(z.shape)}"
        )


class BayesianLinearRegression:
    """Conjugate linear regression with known noise variance and isotropic Gaussian prior.

    Args:
        X: design matrix, shape ``(n, d)``.
        y: targets, shape ``(n,)``.
        noise_var: ``σ² > 0``.
        prior_var: ``τ² > 0``.

    Example:
        >>> m = BayesianLinearRegression(torch.eye(2), torch.tensor([1.0, 2.0]), noise_var=1.0, prior_var=1.0)
        >>> m.posterior().loc
        tensor([0.5000, 1.0000])
    """

    def __init__(self, X: Tensor, y: Tensor, *, noise_var: float, prior_var: float) -> None:
        self.X, self.y = _check_data(X, y)
        self.noise_var = _check_positive("noise_var", noise_var)
        self.prior_var = _check_positive("prior_var", prior_var)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __call__(self, z: Tensor) -> Tensor:
        """``log N(y | X z, σ² I) + log N(z | 0, τ² I)``, batched over ``z[..., d]``."""
        _check_z(z, self.dim)
        n, d = self.X.shape
        resid = self.y - z @ self.X.mT
        loglik = -0.5 * resid.square().sum(-1) / self.noise_var
        loglik = loglik - 0.5 * n * (_LOG_2PI + math.log(self.noise_var))
        logprior = -0.5 * z.square().sum(-1) / self.prior_var
        return loglik + logprior - 0.5 * d * (_LOG_2PI + math.log(self.prior_var))

    def posterior_precision(self) -> Tensor:
        """``A = XᵀX / σ² + I / τ²``."""
        eye = torch.eye(self.dim, dtype=self.X.dtype, device=self.X.device)
        return self.X.mT @ self.X / self.noise_var + eye / self.prior_var

    def posterior(self) -> FullGaussianQ:
        """Exact posterior ``N(A⁻¹ Xᵀ y / σ², A⁻¹)``."""
        a = self.posterior_precision()
        mean = torch.linalg.solve(a, self.X.mT @ self.y / self.noise_var)
        return FullGaussianQ(mean, a)

    def mean_field_posterior(self) -> DiagGaussianQ:
        """Optimal diagonal Gaussian (min KL(q‖p)): exact mean, precision ``diag A``."""
        post = self.posterior()
        return DiagGaussianQ(post.loc, post.precision.diagonal())

    def log_evidence(self) -> Tensor:
        """``log p(y) = log N(y | 0, τ² X Xᵀ + σ² I)``."""
        n = self.X.shape[0]
        eye = torch.eye(n, dtype=self.X.dtype, device=self.X.device)
        cov = self.prior_var * self.X @ self.X.mT + self.noise_var * eye
        chol = torch.linalg.cholesky(cov)
        w = torch.linalg.solve_triangular(chol, self.y[:, None], upper=False)[:, 0]
        logdet = 2.0 * chol.diagonal().log().sum()
        return -0.5 * (w.square().sum() + logdet + n * _LOG_2PI)

    def kl_to_posterior(self, q: GaussianQ) -> Tensor:
        """``KL(q ‖ p(w | y))`` in closed form (equals ``log p(y) − ELBO(q)``)."""
        p = self.posterior()
        a = p.precision
        diff = q.loc - p.loc
        tr = (a * q.covariance).sum()
        return 0.5 * (
            tr + diff @ a @ diff - self.dim + q.log_det_precision() - p.log_det_precision()
        )


class BayesianLogisticRegression:
    """Logistic regression with prior ``w ~ N(0, τ² I)`` and labels in ``{0, 1}``.

    Args:
        X: design matrix, shape ``(n, d)`` (append a column of ones for a bias).
        y: labels, shape ``(n,)``, values 0 or 1.
        prior_var: ``τ² > 0``.
    """

    def __init__(self, X: Tensor, y: Tensor, *, prior_var: float) -> None:
        self.X, self.y = _check_data(X, y)
        if not bool(((self.y == 0) | (self.y == 1)).all()):
            raise ValueError("y must contain only 0/1 labels; map classes to {0, 1}")
        self.prior_var = _check_positive("prior_var", prior_var)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __call__(self, z: Tensor) -> Tensor:
        """``Σ_n [y_n log σ(a_n) + (1 − y_n) log σ(−a_n)] + log N(z | 0, τ² I)``, ``a = X z``."""
        _check_z(z, self.dim)
        a = z @ self.X.mT
        loglik = (self.y * logsigmoid(a) + (1.0 - self.y) * logsigmoid(-a)).sum(-1)
        logprior = -0.5 * z.square().sum(-1) / self.prior_var
        return loglik + logprior - 0.5 * self.dim * (_LOG_2PI + math.log(self.prior_var))

    def predict_proba(
        self,
        q: GaussianQ,
        X: Tensor,
        *,
        n_samples: int | None = 1000,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``p(y=1 | x) = E_q[σ(xᵀ w)]`` by Monte Carlo, or ``σ(xᵀ μ)`` if ``n_samples`` is None."""
        X = torch.as_tensor(X, dtype=q.dtype, device=q.device)
        if X.ndim != 2 or X.shape[1] != q.dim:
            raise ValueError(f"X must have shape (n, {q.dim}), got {tuple(X.shape)}")
        if not bool(torch.isfinite(X).all()):
            raise ValueError("X contains NaN or inf")
        if n_samples is not None and (
            isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1
        ):
            raise ValueError(f"n_samples must be a positive integer or None, got {n_samples!r}")
        with torch.no_grad():
            if n_samples is None:
                return torch.sigmoid(X @ q.loc)
            w = q.sample((n_samples,), generator=generator)
            return torch.sigmoid(w @ X.mT).mean(0)
