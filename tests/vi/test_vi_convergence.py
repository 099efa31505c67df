"""Iterations to reach the exact (or optimal mean-field) posterior: NG-VI vs Adam.

Run ``pytest tests/vi/test_vi_convergence.py -s`` to see the measured counts.
"""

import pytest
import torch

from natgrad.vi import BayesianLinearRegression, DiagGaussianQ, FullGaussianQ, fit, fit_adam

F64 = torch.float64
TOL = 1e-4  # relative error in mean and covariance (precision for mean-field)
ADAM_LRS = (0.03, 0.1, 0.3, 1.0)  # Adam gets the best of a small grid


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model() -> BayesianLinearRegression:
    g = torch.Generator().manual_seed(0)
    n, d = 50, 5
    X = torch.randn(n, d, generator=g, dtype=F64)
    X[:, 1] += 0.8 * X[:, 0]  # correlated posterior
    y = X @ torch.randn(d, generator=g, dtype=F64) + 0.5 * torch.randn(n, generator=g, dtype=F64)
    return BayesianLinearRegression(X, y, noise_var=0.25, prior_var=1.0)


def full_error(model: BayesianLinearRegression):
    post = model.posterior()
    cov = post.covariance

    def err(q) -> float:
        e_mean = (q.loc - post.loc).norm() / post.loc.norm()
        e_cov = (q.covariance - cov).norm() / cov.norm()
        return float(max(e_mean, e_cov))

    return err


def mean_field_error(model: BayesianLinearRegression):
    target = model.mean_field_posterior()

    def err(q) -> float:
        e_mean = (q.loc - target.loc).norm() / target.loc.norm()
        e_prec = ((q.precision - target.precision) / target.precision).abs().max()
        return float(max(e_mean, e_prec))

    return err


def count(run, err, max_steps: int) -> int | None:
    """Steps until ``err(q) <= TOL``, or None if ``max_steps`` is not enough."""
    hit: list[int] = []

    def callback(t, q, info):
        if err(q) <= TOL:
            hit.append(t + 1)
            return True
        return False

    run(callback, max_steps)
    return hit[0] if hit else None


def best_adam(model, q0, err, max_steps: int) -> tuple[int, float]:
    counts = {}
    for lr in ADAM_LRS:

        def run(cb, steps, lr=lr):
            return fit_adam(model, q0, steps=steps, lr=lr, n_samples=None, callback=cb)

        counts[lr] = count(run, err, max_steps)
    done = {lr: c for lr, c in counts.items() if c is not None}
    assert done, f"Adam did not reach tol {TOL} within {max_steps} steps for any lr: {counts}"
    lr = min(done, key=done.get)
    return done[lr], lr


def test_full_covariance_ngvi_vs_adam(model) -> None:
    d = model.dim
    q0 = FullGaussianQ(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64))
    err = full_error(model)
    g = torch.Generator().manual_seed(0)

    def ngvi(rho):
        return lambda cb, steps: fit(
            model, q0, steps=steps, step_size=rho, n_samples=1, generator=g, callback=cb
        )

    ng1 = count(ngvi(1.0), err, 50)
    ng_half = count(ngvi(0.5), err, 200)
    adam, lr = best_adam(model, q0, err, 4000)
    print(f"\n[full] steps to rel. error {TOL:g}: NG-VI rho=1: {ng1}, rho=0.5: {ng_half}, "
          f"Adam (best lr={lr}, exact-cubature ELBO): {adam}")  # fmt: skip
    assert ng1 == 1
    assert ng_half is not None and ng_half < adam
    q, _ = fit(model, q0, steps=1, step_size=1.0, n_samples=1, generator=g)
    assert err(q) < 1e-10


def test_mean_field_ngvi_vs_adam(model) -> None:
    d = model.dim
    q0 = DiagGaussianQ(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64))
    err = mean_field_error(model)
    g = torch.Generator().manual_seed(0)

    def run(cb, steps):
        return fit(model, q0, steps=steps, step_size=1.0, n_samples=1, generator=g, callback=cb)

    ng = count(run, err, 200)
    adam, lr = best_adam(model, q0, err, 4000)
    print(f"\n[mean-field] steps to rel. error {TOL:g}: NG-VI rho=1: {ng}, "
          f"Adam (best lr={lr}, exact-cubature ELBO): {adam}")  # fmt: skip
    assert ng is not None and ng < adam
    # after one step the precision is already exactly diag(A); the mean follows Jacobi
    q, _ = fit(model, q0, steps=1, step_size=1.0, generator=g)
    torch.testing.assert_close(q.precision, model.posterior_precision().diagonal())
    q, _ = fit(model, q0, steps=200, step_size=1.0, generator=g)
    torch.testing.assert_close(q.loc, model.posterior().loc, rtol=1e-10, atol=1e-10)
