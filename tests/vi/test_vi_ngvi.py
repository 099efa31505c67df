"""NG-VI update: derivation check, exactness on Gaussian targets, failure handling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a single intra-op thread avoids oversubscription on shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_quartic(d: int, seed: int):
    """f(z) = -½ zᵀAz + bᵀz - Σ c_i z_i⁴ / 4 (concave), plus its Gaussian expectation."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    a = m @ m.T / d + torch.eye(d, dtype=F64)
    b = torch.randn(d, generator=g, dtype=F64)
    c = torch.rand(d, generator=g, dtype=F64)

    def f(z):
        return -0.5 * ((z @ a) * z).sum(-1) + z @ b - 0.25 * (c * z**4).sum(-1)

    def expected_f(mu, second, var):
        # second: E[z zᵀ]; var: diag of Σ. E[z⁴] = μ⁴ + 6μ²v + 3v² per coordinate.
        fourth = mu**4 + 6 * mu**2 * var + 3 * var**2
        return -0.5 * (a * second).sum() + b @ mu - 0.25 * (c * fourth).sum()

    return f, expected_f


def random_q(d: int, seed: int, diag: bool):
    g = torch.Generator().manual_seed(seed + 7)
    loc = torch.randn(d, generator=g, dtype=F64)
    if diag:
        return DiagGaussianQ(loc, torch.rand(d, generator=g, dtype=F64) + 0.5)
    m = torch.randn(d, d, generator=g, dtype=F64)
    return FullGaussianQ(loc, m @ m.T / d + 0.5 * torch.eye(d, dtype=F64))


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 5), seed=st.integers(0, 1000), rho=st.floats(0.05, 1.0))
def test_full_step_equals_eta_plus_rho_grad_mean_params(d: int, seed: int, rho: float) -> None:
    """η' = η + ρ ∇_m ELBO, with the ELBO written in closed form in (m1, m2)."""
    f, expected_f = make_quartic(d, seed)
    q = random_q(d, seed, diag=False)
    m1, m2 = (t.clone().requires_grad_(True) for t in q.mean_params())
    cov = m2 - torch.outer(m1, m1)
    objective = expected_f(m1, m2, cov.diagonal()) + 0.5 * torch.logdet(cov)
    g1, g2 = torch.autograd.grad(objective, (m1, m2))
    eta1, eta2 = q.natural_params()
    expected = FullGaussianQ.from_natural(eta1 + rho * g1, eta2 + rho * g2)
    # cubature is exact for E[∇f] and E[∇²f] when f has degree 4
    got, info = ngvi_step(f, q, step_size=rho, n_samples=None)
    assert info.ok, info.message
    torch.testing.assert_close(got.precision, expected.precision)
    torch.testing.assert_close(got.loc, expected.loc)


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 5), seed=st.integers(0, 1000), rho=st.floats(0.05, 1.0))
def test_diag_step_equals_eta_plus_rho_grad_mean_params(d: int, seed: int, rho: float) -> None:
    f, expected_f = make_quartic(d, seed)
    q = random_q(d, seed, diag=True)
    m1, m2 = (t.clone().requires_grad_(True) for t in q.mean_params())
    var = m2 - m1**2
    second = torch.outer(m1, m1) - torch.diag(m1**2) + torch.diag(m2)
    objective = expected_f(m1, second, var) + 0.5 * var.log().sum()
    g1, g2 = torch.autograd.grad(objective, (m1, m2))
    eta1, eta2 = q.natural_params()
    expected = DiagGaussianQ.from_natural(eta1 + rho * g1, eta2 + rho * g2)
    got, info = ngvi_step(f, q, step_size=rho, n_samples=None)
    assert info.ok, info.message
    torch.testing.assert_close(got.precision, expected.precision)
    torch.testing.assert_close(got.loc, expected.loc)


def linear_problem(n: int, d: int, seed: int, noise_var: float = 0.25, prior_var: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = X @ torch.randn(d, generator=g, dtype=F64) + math.sqrt(noise_var) * torch.randn(
        n, generator=g, dtype=F64
    )
    return BayesianLinearRegression(X, y, noise_var=noise_var, prior_var=prior_var)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    d=st.integers(1, 6),
    seed=st.integers(0, 1000),
    noise_var=st.floats(0.01, 10.0),
    n_samples=st.sampled_from([1, 3, None]),
    hessian=st.sampled_from(["autograd", "stein"]),
)
def test_one_full_step_gives_exact_linear_posterior(n, d, seed, noise_var, n_samples, hessian):
    if hessian == "stein":
        n_samples = None  # Stein's estimator is exact for quadratics only under cubature
    model = linear_problem(n, d, seed, noise_var)
    q0 = random_q(d, seed, diag=False)
    q, info = ngvi_step(
        model, q0, step_size=1.0, n_samples=n_samples, hessian=hessian,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    assert info.ok
    post = model.posterior()
    torch.testing.assert_close(q.precision, post.precision, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(q.loc, post.loc, rtol=1e-8, atol=1e-8)
    # the ELBO of the exact posterior is the log evidence, for any sample
    value = elbo(model, q, n_samples=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(value, model.log_evidence(), rtol=1e-9, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 6), seed=st.integers(0, 1000), rho=st.floats(0.1, 1.0))
def test_mean_field_optimum_is_a_fixed_point(d: int, seed: int, rho: float) -> None:
    model = linear_problem(20, d, seed)
    q_star = model.mean_field_posterior()
    torch.testing.assert_close(q_star.precision, model.posterior_precision().diagonal())
    q, info = ngvi_step(model, q_star, step_size=rho, generator=torch.Generator().manual_seed(0))
    assert info.ok and info.grad_norm < 1e-9 and info.precision_residual < 1e-12
    torch.testing.assert_close(q.loc, q_star.loc)
    torch.testing.assert_close(q.precision, q_star.precision)


def test_elbo_is_log_evidence_minus_kl() -> None:
    model = linear_problem(25, 4, 3)
    q = random_q(4, 3, diag=False)
    # cubature integrates the quadratic log-joint exactly
    exact = model.log_evidence() - model.kl_to_posterior(q)
    torch.testing.assert_close(elbo(model, q, n_samples=None), exact)
    mc = elbo(model, q, n_samples=20_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(mc - exact)) < 0.05 * abs(float(exact)) + 0.5
    torch.testing.assert_close(
        elbo(model, model.posterior(), n_samples=1), model.log_evidence(), rtol=1e-10, atol=1e-9
    )


def test_stein_hessian_is_unbiased() -> None:
    f, _ = make_quartic(3, 0)
    q = random_q(3, 0, diag=False)
    ref = expected_derivatives(f, q, n_samples=None).hess
    g = torch.Generator().manual_seed(0)
    est = expected_derivatives(f, q, n_samples=20_000, hessian="stein", generator=g).hess
    torch.testing.assert_close(est, ref, atol=0.15 * float(ref.abs().max()), rtol=0)


@pytest.mark.parametrize("diag", [False, True])
def test_non_pd_update_comes_back_as_data(diag: bool) -> None:
    q = random_q(3, 1, diag)

    def convex(z):  # log-joint with positive curvature: S' = (1-ρ) S - ρ I can go indefinite
        return 0.5 * 5.0 * z.square().sum(-1)

    q_new, info = ngvi_step(convex, q, step_size=1.0)
    assert q_new is q
    assert not info.ok and "positive" in info.message
    assert math.isfinite(info.elbo)
    q_new, info = ngvi_step(lambda z: z.sum(-1) * math.nan, q, step_size=0.5)
    assert q_new is q and not info.ok and "non-finite" in info.message


def test_fit_on_failure_modes() -> None:
    q0 = random_q(2, 0, diag=False)

    def convex(z):
        return 3.0 * z.square().sum(-1)

    q, hist = fit(convex, q0, steps=5, step_size=1.0)
    assert q is q0 and len(hist) == 1 and not hist[0].ok
    q, hist = fit(convex, q0, steps=5, step_size=1.0, on_failure="skip")
    assert q is q0 and len(hist) == 5
    with pytest.raises(RuntimeError, match="NG-VI step 0 failed"):
        fit(convex, q0, steps=5, step_size=1.0, on_failure="raise")


def test_fit_callback_and_schedule() -> None:
    model = linear_problem(10, 2, 0)
    seen = []
    q, hist = fit(
        model,
        random_q(2, 0, diag=False),
        steps=10,
        step_size=lambda t: 1.0 / (t + 2),
        callback=lambda t, q, info: seen.append((t, info.step_size)) or t == 2,
    )
    assert seen == [(0, 0.5), (1, 1 / 3), (2, 0.25)] and len(hist) == 3
    assert hist[1].elbo > hist[0].elbo


def test_logistic_regression_ngvi_beats_or_matches_adam() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 200, 4
    X = torch.cat([torch.randn(n, d - 1, generator=g, dtype=F64), torch.ones(n, 1, dtype=F64)], 1)
    w = torch.tensor([1.5, -2.0, 0.5, 0.3], dtype=F64)
    y = (torch.rand(n, generator=g, dtype=F64) < torch.sigmoid(X @ w)).to(F64)
    model = BayesianLogisticRegression(X, y, prior_var=4.0)
    q0 = FullGaussianQ(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64))
    q_ng, hist = fit(model, q0, steps=15, step_size=lambda t: 1.0 if t < 5 else 0.5, n_samples=8,
                     generator=g)  # fmt: skip
    assert all(h.ok for h in hist)
    q_adam, _ = fit_adam(model, q0, steps=400, lr=0.05, n_samples=8, generator=g)
    common = torch.Generator()
    e_ng = elbo(model, q_ng, n_samples=4000, generator=common.manual_seed(1))
    e_adam = elbo(model, q_adam, n_samples=4000, generator=common.manual_seed(1))
    assert float(e_ng) > float(e_adam) - 0.05
    assert float(e_ng) > hist[0].elbo + 10
    # posterior mean recovers the sign pattern of the true weights
    assert torch.equal(torch.sign(q_ng.loc[:3]), torch.sign(w[:3]))
