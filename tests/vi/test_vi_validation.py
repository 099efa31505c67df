"""Bad inputs to the VI entry points raise ValueError naming the argument."""

import math

import pytest
import torch

from natgrad.vi import (
    BayesianLinearRegression,
    BayesianLogisticRegression,
    DiagGaussianQ,
    FullGaussianQ,
    elbo,
    expected_derivatives,
    fit,
    fit_adam,
    ngvi_step,
)

F64 = torch.float64
Q_FULL = FullGaussianQ(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
Q_DIAG = DiagGaussianQ(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))


def good(z):
    return -0.5 * z.square().sum(-1)


@pytest.mark.parametrize("step_size", [0.0, -0.1, 1.5, math.nan, math.inf, "1", True])
def test_step_size_outside_unit_interval(step_size) -> None:
    with pytest.raises(ValueError, match="step_size"):
        ngvi_step(good, Q_FULL, step_size=step_size)
    with pytest.raises(ValueError, match="step_size"):
        fit(good, Q_DIAG, steps=2, step_size=step_size)


def test_step_size_schedule_checked_each_step() -> None:
    with pytest.raises(ValueError, match="step_size schedule returned 2.0 at step 1"):
        fit(good, Q_FULL, steps=3, step_size=lambda t: 0.5 if t == 0 else 2.0)


@pytest.mark.parametrize("n_samples", [0, -3, 1.5, True, "4"])
def test_n_samples_below_one(n_samples) -> None:
    for call in (
        lambda: ngvi_step(good, Q_FULL, n_samples=n_samples),
        lambda: fit(good, Q_FULL, steps=1, n_samples=n_samples),
        lambda: fit_adam(good, Q_FULL, steps=1, n_samples=n_samples),
        lambda: elbo(good, Q_FULL, n_samples=n_samples),
    ):
        with pytest.raises(ValueError, match="n_samples"):
            call()


@pytest.mark.parametrize("q", [Q_FULL, Q_DIAG])
def test_log_joint_returning_wrong_shape(q) -> None:
    with pytest.raises(ValueError, match="one value per sample"):
        ngvi_step(lambda z: -0.5 * z.square().sum(), q)  # reduced over the samples too
    with pytest.raises(ValueError, match="one value per sample"):
        ngvi_step(lambda z: -0.5 * z.square(), q)  # not reduced over d
    with pytest.raises(ValueError, match="one value per sample"):
        fit_adam(lambda z: 1.0, q, steps=1)


def test_log_joint_with_other_dimension() -> None:
    w = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="q's dimension matches the model"):
        ngvi_step(lambda z: -((z @ w) ** 2), Q_FULL)  # model has 3 weights, q has 2
    X = torch.randn(10, 3, dtype=F64)
    model = BayesianLinearRegression(X, X.sum(1), noise_var=1.0, prior_var=1.0)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 3\)"):
        fit(model, Q_FULL, steps=1)


def test_non_pd_initial_covariance() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        FullGaussianQ.from_covariance(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1e-3]]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit(good, Q_FULL, steps=-1), "steps"),
        (lambda: fit(good, Q_FULL, steps=2.5), "steps"),
        (lambda: fit(good, Q_FULL, steps=1, on_failure="ignore"), "on_failure"),
        (lambda: ngvi_step(good, Q_FULL, hessian="bfgs"), "hessian"),
        (lambda: ngvi_step(good, "q"), "q must be"),
        (lambda: expected_derivatives(good, None), "q must be"),
        (lambda: fit_adam(good, Q_FULL, steps=1, lr=0.0), "lr"),
        (lambda: fit_adam(good, Q_FULL, steps=1, lr=lambda t: -1.0), "lr"),
        (lambda: fit_adam(good, object(), steps=1), "q0"),
        (
            lambda: BayesianLinearRegression(
                torch.ones(3, 2), torch.ones(2), noise_var=1.0, prior_var=1.0
            ),
            "y must have shape",
        ),  # fmt: skip
        (
            lambda: BayesianLinearRegression(
                torch.ones(3, 2), torch.ones(3), noise_var=0.0, prior_var=1.0
            ),
            "noise_var",
        ),  # fmt: skip
        (
            lambda: BayesianLogisticRegression(
                torch.ones(3, 2), torch.tensor([0.0, 1.0, 2.0]), prior_var=1.0
            ),
            "0/1",
        ),  # fmt: skip
    ],
)
def test_other_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_adam_failure_comes_back_as_data() -> None:
    q, hist = fit_adam(lambda z: z.sum(-1) * math.nan, Q_FULL, steps=5)
    assert len(hist) == 1 and not hist[0].ok and "non-finite" in hist[0].message
    torch.testing.assert_close(q.covariance, Q_FULL.covariance)
