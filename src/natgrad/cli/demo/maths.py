"""The seed article's pictures, computed with natgrad (used by ``natgrad demo``).

* :func:`gaussian_shift` — the two pairs of Gaussians of Kevin Frans' "What is
  the natural gradient": the mean moves from −1 to +1 in both, a Euclidean
  distance of 2 in parameter space, but the distribution changes far more when
  σ is small.  The change is measured by ``KL(p_old ‖ p_new)``
  (:meth:`natgrad.DiagGaussian.kl`) and by the Fisher distance
  ``sqrt(δᵀFδ)``, with ``F`` the Fisher in ``(μ, log σ)`` from
  :func:`natgrad.fisher_matrix` (analytically ``diag(1/σ², 2)``).
* :func:`fit_paths` — gradient descent and natural-gradient descent fitting a
  Gaussian, their paths in ``(μ, log σ)`` space.

The maths returns small records; :mod:`natgrad.cli.demo.plots` draws them.

>>> s = gaussian_shift(3.0)
>>> round(float(s.kl), 4), round(float(s.fisher_distance), 4), float(s.euclidean_distance)
(0.2222, 0.6667, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from natgrad.distributions import DiagGaussian
from natgrad.fisher import fisher_matrix, metric_distance
from natgrad.linalg import solve_dense

__all__ = [
    "DEFAULT_SIGMAS",
    "FitPath",
    "GaussianShift",
    "analytic_fisher",
    "fit_paths",
    "gaussian_fisher",
    "gaussian_model",
    "gaussian_shift",
]

DEFAULT_SIGMAS = (0.3, 3.0)
"""The small and the large σ of the two pairs."""

_DTYPE = torch.float64


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; e.g. {name}=0.3")
    return float(value)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _num(value: float, digits: int = 4) -> str:
    """``value`` rounded for printing, never as ``-0.0000``."""
    return f"{round(value, digits) + 0.0:.{digits}f}"


def gaussian_model(params: Sequence[Tensor], batch: object = None) -> DiagGaussian:
    """A 1-d Gaussian whose parameters *are* the model parameters ``(μ, log σ)``.

    The model function for :func:`natgrad.fisher_matrix`; ``batch`` is unused.
    """
    mean, log_std = params
    return DiagGaussian(mean.reshape(1, 1), log_std.reshape(1, 1))


def _params(mean: float, sigma: float) -> list[Tensor]:
    return [torch.tensor(mean, dtype=_DTYPE), torch.tensor(math.log(sigma), dtype=_DTYPE)]


def gaussian_fisher(mean: float, sigma: float, *, method: str = "ggn") -> Tensor:
    """The 2×2 Fisher of ``N(mean, sigma²)`` in ``(μ, log σ)``, by :func:`natgrad.fisher_matrix`.

    ``method`` is ``"ggn"`` or ``"kl_hessian"`` (the seed's double backprop).
    """
    mean = _finite("mean", mean)
    sigma = _positive("sigma", sigma)
    if method not in ("ggn", "kl_hessian"):
        raise ValueError(f"method must be 'ggn' or 'kl_hessian', got {method!r}")
    return fisher_matrix(gaussian_model, _params(mean, sigma), method=method)


def analytic_fisher(sigma: float) -> Tensor:
    """The closed form ``diag(1/σ², 2)`` of the Gaussian Fisher in ``(μ, log σ)``."""
    sigma = _positive("sigma", sigma)
    return torch.diag(torch.tensor([1.0 / sigma**2, 2.0], dtype=_DTYPE))


@dataclass(frozen=True)
class GaussianShift:
    """One pair of Gaussians of equal σ whose mean moves from ``mu_old`` to ``mu_new``.

    Attributes:
        sigma: The common standard deviation.
        mu_old, mu_new: The two means.
        kl: ``KL(p_old ‖ p_new)`` from :meth:`natgrad.DiagGaussian.kl`.
        fisher: The Fisher at ``p_old`` in ``(μ, log σ)``, from :func:`natgrad.fisher_matrix`.
        euclidean_distance: ``‖δ‖`` of the parameter step ``δ = (Δμ, 0)``.
        fisher_distance: ``sqrt(δᵀFδ)``, the step's length in the Fisher metric.
    """

    sigma: float
    mu_old: float
    mu_new: float
    kl: Tensor
    fisher: Tensor
    euclidean_distance: Tensor
    fisher_distance: Tensor

    @property
    def delta(self) -> Tensor:
        """The parameter step ``(Δμ, Δlog σ) = (mu_new − mu_old, 0)``."""
        return torch.tensor([self.mu_new - self.mu_old, 0.0], dtype=_DTYPE)

    def describe(self) -> str:
        """A few lines with every number of the pair, as ``natgrad demo gaussians`` prints them."""
        f = [[_num(float(v)) for v in row] for row in self.fisher]
        return (
            f"sigma = {self.sigma:g}: mean {self.mu_old:+g} -> {self.mu_new:+g}\n"
            f"  Euclidean distance         {float(self.euclidean_distance):.4f}\n"
            f"  KL(p_old || p_new)         {float(self.kl):.4f}\n"
            f"  Fisher distance sqrt(dFd)  {float(self.fisher_distance):.4f}\n"
            f"  Fisher in (mu, log sigma)  [[{f[0][0]}, {f[0][1]}], [{f[1][0]}, {f[1][1]}]]"
            f"\n  analytic diag(1/sigma^2, 2) = diag({1 / self.sigma**2:.4f}, 2.0000): "
            f"{'equal' if self.fisher_error <= 1e-12 else 'DIFFERENT'} to 1e-12"
        )

    @property
    def fisher_error(self) -> float:
        """``max |F − A| / max(1, max |A|)`` with ``A = diag(1/σ², 2)``: relative distance."""
        exact = analytic_fisher(self.sigma)
        return float((self.fisher - exact).abs().max()) / max(1.0, float(exact.abs().max()))


def gaussian_shift(
    sigma: float, mu_old: float = -1.0, mu_new: float = 1.0, *, method: str = "ggn"
) -> GaussianShift:
    """Measure the move ``N(mu_old, σ²) → N(mu_new, σ²)`` three ways (see :class:`GaussianShift`).

    For a pure mean shift ``KL = (Δμ)²/(2σ²)`` exactly and the squared Fisher
    distance is ``(Δμ)²/σ² = 2·KL``: the same Euclidean step of 2 is a KL of
    ``2/σ²``, large for small σ and small for large σ.
    """
    sigma = _positive("sigma", sigma)
    mu_old = _finite("mu_old", mu_old)
    mu_new = _finite("mu_new", mu_new)
    old = gaussian_model(_params(mu_old, sigma))
    new = gaussian_model(_params(mu_new, sigma))
    fisher = gaussian_fisher(mu_old, sigma, method=method)
    delta = torch.tensor([mu_new - mu_old, 0.0], dtype=_DTYPE)
    return GaussianShift(
        sigma=sigma,
        mu_old=mu_old,
        mu_new=mu_new,
        kl=old.kl(new).sum(),
        fisher=fisher,
        euclidean_distance=delta.norm(),
        fisher_distance=metric_distance(delta, fisher).sqrt(),
    )


@dataclass(frozen=True)
class FitPath:
    """The iterates of one optimiser fitting ``N(μ, σ²)`` to a target Gaussian.

    Attributes:
        name: ``"gradient descent"`` or ``"natural gradient"``.
        points: ``(steps + 1, 2)`` tensor of ``(μ, log σ)``, the start first.
        losses: ``KL(p_target ‖ p_θ)`` at each point.
    """

    name: str
    points: Tensor
    losses: Tensor


def _fit_loss(target: DiagGaussian, theta: Sequence[Tensor]) -> Tensor:
    return target.kl(gaussian_model(theta)).sum()


def fit_paths(
    start: tuple[float, float] = (-3.0, math.log(3.0)),
    target: tuple[float, float] = (2.0, math.log(0.5)),
    *,
    lr: float = 0.2,
    steps: int = 40,
) -> tuple[FitPath, FitPath]:
    """Gradient descent vs natural-gradient descent on ``KL(p_target ‖ p_θ)``, θ = (μ, log σ).

    The loss is the expected negative log-likelihood of data from the target,
    up to a constant (maximum likelihood).  Both optimisers take ``steps``
    steps of the same learning rate; the natural one moves along
    ``F⁻¹g`` with ``F`` from :func:`natgrad.fisher_matrix` at the current θ,
    solved by :func:`natgrad.solve_dense`.  Starting wide (σ = 3), the plain
    gradient in μ is ``(μ − μ*)/σ²``, nine times too small, and gradient
    descent crawls; the natural gradient in μ is ``μ − μ*`` whatever σ is.

    Args:
        start: ``(μ, log σ)`` to start from.
        target: ``(μ*, log σ*)`` of the Gaussian to fit.
        lr: Learning rate of both optimisers, > 0.
        steps: Number of steps, an int >= 1.
    """
    for name, pair in (("start", start), ("target", target)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name} must be a pair (mu, log_sigma), got {pair!r}")
        _finite(f"{name}[0]", pair[0])
        _finite(f"{name}[1]", pair[1])
    lr = _positive("lr", lr)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}; e.g. steps=40")
    goal = gaussian_model([torch.tensor(float(t), dtype=_DTYPE) for t in target])
    paths = []
    for natural in (False, True):
        theta = torch.tensor([float(s) for s in start], dtype=_DTYPE)
        points, losses = [theta], []
        for k in range(steps + 1):
            leaves = [t.clone().requires_grad_(True) for t in theta]
            loss = _fit_loss(goal, leaves)
            losses.append(loss.detach())
            if k == steps:
                break
            grad = torch.stack(torch.autograd.grad(loss, leaves))
            if natural:
                grad = solve_dense(fisher_matrix(gaussian_model, list(theta)), grad)
            theta = theta - lr * grad
            points.append(theta)
        name = "natural gradient" if natural else "gradient descent"
        paths.append(FitPath(name, torch.stack(points), torch.stack(losses)))
    return paths[0], paths[1]
