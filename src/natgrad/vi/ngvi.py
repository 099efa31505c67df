r"""Natural-gradient variational inference (NG-VI) for Gaussian families.

Derivation
----------
Let ``q = N(μ, Σ)`` with precision ``S = Σ⁻¹``, natural parameters
``η = (η1, η2) = (S μ, −½ S)`` and mean parameters ``m = (m1, m2) = (μ, Σ + μ μᵀ)``.
For an exponential family the Fisher matrix is ``F(η) = ∂m/∂η``, so the natural
gradient of the ELBO ``L = E_q[f(z)] + H[q]`` (``f = log p``) is

    F(η)⁻¹ ∇_η L = ∇_m L                                   (Khan & Nielsen 2018).

A natural-gradient ascent step of size ``ρ`` is therefore ``η ← η + ρ ∇_m L``.
By the chain rule through ``μ = m1``, ``Σ = m2 − m1 m1ᵀ``:
``∇_{m2} = ∇_Σ`` and ``∇_{m1} = ∇_μ − 2 (∇_Σ) μ``. With Bonnet's and Price's
identities ``∇_μ E_q[f] = ḡ := E_q[∇f]``, ``∇_Σ E_q[f] = ½ H̄ := ½ E_q[∇²f]``, and
``∇_Σ H[q] = ½ S``, ``∇_μ H[q] = 0``:

    ∇_{m2} L = ½ H̄ + ½ S,        ∇_{m1} L = ḡ − H̄ μ − S μ.

Plugging into ``−½ S' = −½ S + ρ ∇_{m2} L`` and ``S' μ' = S μ + ρ ∇_{m1} L``:

    S' = (1 − ρ) S + ρ (−E_q[∇² log p(z)])
    μ' = μ + ρ S'⁻¹ E_q[∇ log p(z)]

(note the *updated* precision ``S'`` in the mean step). This is the Gaussian
"Bayesian learning rule" / variational online Newton update; with ``ρ = 1`` and
exact expectations it is a Newton step on the expected log-joint. For a Gaussian
log-joint ``f(z) = −½ zᵀ A z + bᵀ z + c`` one step with ``ρ = 1`` gives ``S' = A``,
``μ' = A⁻¹ b``: the exact posterior, from any starting ``q``.

The diagonal family uses the same formulas restricted to diagonals
(``η2 = −½ s`` a vector, ``m2 = E[z ⊙ z]``): ``s' = (1 − ρ) s − ρ diag H̄``,
``μ' = μ + ρ ḡ / s'``. Its fixed point is the optimal mean-field Gaussian; for a
Gaussian target it has the exact mean and ``s = diag A``. The mean iteration is
then damped Jacobi on ``A μ = b`` and converges for ``ρ < 2 / λ_max(D^{-1/2} A D^{-1/2})``
(``D = diag A``), so ``ρ = 1`` can diverge for strongly correlated targets.

Expectations are estimated with :func:`natgrad.vi.estimators.expected_derivatives`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from natgrad.vi.estimators import LogJoint, check_n_samples, expected_derivatives
from natgrad.vi.gaussian import DiagGaussianQ, FullGaussianQ, GaussianQ

__all__ = ["VIStepInfo", "check_step_size", "fit", "ngvi_step"]

StepSize = float | Callable[[int], float]
Callback = Callable[[int, GaussianQ, "VIStepInfo"], bool | None]
_ON_FAILURE = ("stop", "skip", "raise")


@dataclass(frozen=True)
class VIStepInfo:
    """Record of one VI step.

    Attributes:
        elbo: ELBO estimate of the ``q`` the step *started from*.
        step_size: step size used (``ρ`` for NG-VI, learning rate for Adam).
        grad_norm: NG-VI: ``‖E_q[∇ log p]‖₂`` (zero at the optimum);
            Adam: norm of the ELBO gradient with respect to its parameters.
        precision_residual: NG-VI: ``‖−H̄ − S‖_F / ‖S‖_F`` (zero at the optimum);
            ``nan`` for Adam.
        ok: ``False`` if the step failed and the state was left unchanged.
        message: reason for a failure, empty otherwise.
        n_evals: log-joint evaluations used.
    """

    elbo: float
    step_size: float
    grad_norm: float
    precision_residual: float = math.nan
    ok: bool = True
    message: str = ""
    n_evals: int = 0


def check_step_size(step_size: float) -> float:
    """Return ``step_size`` as a float, raising ``ValueError`` unless ``0 < ρ ≤ 1``."""
    if isinstance(step_size, bool) or not isinstance(step_size, int | float):
        raise ValueError(f"step_size must be a number in (0, 1], got {step_size!r}")
    rho = float(step_size)
    if not 0.0 < rho <= 1.0:
        raise ValueError(
            f"step_size must lie in (0, 1], got {step_size!r}; ρ = 1 is a full "
            "(Newton-like) step, smaller values damp it"
        )
    return rho


def ngvi_step(
    log_joint: LogJoint,
    q: GaussianQ,
    *,
    step_size: float = 1.0,
    n_samples: int | None = 1,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    hessian: str = "autograd",
) -> tuple[GaussianQ, VIStepInfo]:
    """One natural-gradient VI step (pure: ``q`` is not modified).

    Computes ``S' = (1 − ρ) S − ρ E_q[∇² log p]`` and ``μ' = μ + ρ S'⁻¹ E_q[∇ log p]``
    (diagonals only for :class:`DiagGaussianQ`); see the module docstring for the
    derivation from ``η ← η + ρ ∇_m ELBO``.

    Args:
        log_joint: ``log p(z)`` batched over leading dims, ``z[..., d] -> [...]``.
        q: current Gaussian.
        step_size: ``ρ ∈ (0, 1]``.
        n_samples: draws per step (antithetic pairs by default), or ``None`` for the
            deterministic cubature rule (exact for Gaussian log-joints).
        generator: torch generator for the draws.
        antithetic: mirror each draw; makes the step exact for Gaussian log-joints.
        hessian: ``"autograd"`` or ``"stein"`` estimator of ``E_q[∇² log p]``.

    Returns:
        ``(q_new, info)``. If the new precision is not positive definite or an estimate
        is not finite, ``q_new is q`` and ``info.ok`` is ``False``.

    Raises:
        ValueError: on invalid arguments or a log-joint of the wrong output shape.

    Example:
        >>> A, b = torch.tensor([[2.0, 1.0], [1.0, 2.0]]), torch.tensor([1.0, 0.0])
        >>> f = lambda z: -0.5 * ((z @ A) * z).sum(-1) + z @ b
        >>> q, info = ngvi_step(f, FullGaussianQ(torch.zeros(2), torch.eye(2)))
        >>> torch.allclose(q.precision, A) and torch.allclose(q.loc, torch.linalg.solve(A, b))
        True
    """
    rho = check_step_size(step_size)
    check_n_samples(n_samples)
    est = expected_derivatives(
        log_joint, q, n_samples=n_samples, generator=generator, antithetic=antithetic,
        hessian=hessian,
    )  # fmt: skip
    elbo_value = float(est.elbo)
    grad_norm = float(est.grad.norm())
    neg_h = -est.hess
    residual = float((neg_h - q.precision).norm() / q.precision.norm())

    def failed(message: str) -> tuple[GaussianQ, VIStepInfo]:
        info = VIStepInfo(elbo_value, rho, grad_norm, residual, False, message, est.n_evals)
        return q, info

    if not est.finite:
        return failed("non-finite log-joint, gradient or Hessian estimate")
    if isinstance(q, DiagGaussianQ):
        s_new = (1.0 - rho) * q.precision + rho * neg_h
        if not bool((s_new > 0).all()):
            return failed(
                f"updated precision not positive (min {float(s_new.min()):.3g}); "
                "the log-joint is not concave here: reduce step_size"
            )
        loc_new = q.loc + rho * est.grad / s_new
        q_new: GaussianQ = DiagGaussianQ._unchecked(loc_new, s_new)
    else:
        s_new = (1.0 - rho) * q.precision + rho * neg_h
        s_new = 0.5 * (s_new + s_new.mT)
        chol, err = torch.linalg.cholesky_ex(s_new)
        if int(err) != 0:
            return failed(
                f"updated precision not positive definite (Cholesky failed at minor {int(err)}); "
                "the log-joint is not concave here: reduce step_size"
            )
        loc_new = q.loc + rho * torch.cholesky_solve(est.grad[:, None], chol)[:, 0]
        q_new = FullGaussianQ._unchecked(loc_new, s_new, chol)
    if not bool(torch.isfinite(loc_new).all()):
        return failed("non-finite updated mean")
    return q_new, VIStepInfo(elbo_value, rho, grad_norm, residual, True, "", est.n_evals)


def _resolve_step(step_size: StepSize, t: int) -> float:
    value = step_size(t) if callable(step_size) else step_size
    try:
        return check_step_size(value)
    except ValueError as err:
        if callable(step_size):
            raise ValueError(f"step_size schedule returned {value!r} at step {t}: {err}") from err
        raise


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def fit(
    log_joint: LogJoint,
    q0: GaussianQ,
    *,
    steps: int,
    step_size: StepSize = 1.0,
    n_samples: int | None = 1,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    hessian: str = "autograd",
    on_failure: str = "stop",
    callback: Callback | None = None,
) -> tuple[GaussianQ, list[VIStepInfo]]:
    """Run ``steps`` NG-VI steps from ``q0`` (see :func:`ngvi_step`).

    Args:
        log_joint: ``log p(z)``, batched over leading dims.
        q0: initial Gaussian; its family (diagonal or full) is kept.
        steps: maximum number of steps (``≥ 0``).
        step_size: ``ρ ∈ (0, 1]``, or a schedule ``t -> ρ_t`` (``t = 0, 1, ...``), e.g.
            a decaying ``ρ_t`` to average out Monte Carlo noise.
        n_samples: draws per step, or ``None`` for deterministic cubature.
        generator: torch generator for the draws.
        antithetic: mirror each draw.
        hessian: ``"autograd"`` or ``"stein"``.
        on_failure: what to do when a step fails (``info.ok`` is ``False``): ``"stop"``
            returns the last good ``q``; ``"skip"`` keeps it and continues with new draws;
            ``"raise"`` raises ``RuntimeError``.
        callback: ``callback(t, q, info)`` after each step (``q`` is the new state);
            return ``True`` to stop early.

    Returns:
        ``(q, history)`` with one :class:`VIStepInfo` per step taken.

    Example:
        >>> f = lambda z: -0.5 * (z - 3.0).square().sum(-1)
        >>> q, hist = fit(f, DiagGaussianQ(torch.zeros(2), torch.ones(2) * 5), steps=1)
        >>> q.loc, q.precision
        (tensor([3., 3.]), tensor([1., 1.]))
    """
    _check_steps(steps)
    check_n_samples(n_samples)
    if on_failure not in _ON_FAILURE:
        raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {on_failure!r}")
    if not callable(step_size):
        check_step_size(step_size)  # even when steps == 0
    q = q0
    history: list[VIStepInfo] = []
    for t in range(steps):
        rho = _resolve_step(step_size, t)
        q, info = ngvi_step(
            log_joint, q, step_size=rho, n_samples=n_samples, generator=generator,
            antithetic=antithetic, hessian=hessian,
        )  # fmt: skip
        history.append(info)
        if not info.ok:
            if on_failure == "raise":
                raise RuntimeError(f"NG-VI step {t} failed: {info.message}")
            if on_failure == "stop":
                break
        if callback is not None and callback(t, q, info):
            break
    return q, history
