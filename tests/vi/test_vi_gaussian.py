"""Gaussian families: parameter conversions, densities, sampling, input validation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad.vi import DiagGaussianQ, FullGaussianQ

F64 = torch.float64


def random_spd(d: int, seed: int, cond: float = 10.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    qmat, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    eig = torch.logspace(0, math.log10(cond), d, dtype=F64)
    return (qmat * eig) @ qmat.T


def random_vec(d: int, seed: int) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)


dims = st.integers(1, 6)
seeds = st.integers(0, 10_000)
conds = st.floats(1.0, 1e3)


@settings(max_examples=30, deadline=None)
@given(d=dims, seed=seeds, cond=conds)
def test_full_round_trips(d: int, seed: int, cond: float) -> None:
    cov = random_spd(d, seed, cond)
    loc = random_vec(d, seed)
    q = FullGaussianQ.from_covariance(loc, cov)
    torch.testing.assert_close(q.covariance, cov)
    torch.testing.assert_close(q.precision @ cov, torch.eye(d, dtype=F64))
    eta1, eta2 = q.natural_params()
    torch.testing.assert_close(eta1, torch.linalg.solve(cov, loc))
    torch.testing.assert_close(eta2, -0.5 * q.precision)
    back = FullGaussianQ.from_natural(eta1, eta2)
    torch.testing.assert_close(back.loc, loc)
    torch.testing.assert_close(back.covariance, cov)
    m1, m2 = q.mean_params()
    torch.testing.assert_close(m2, cov + torch.outer(loc, loc))
    back = FullGaussianQ.from_mean_params(m1, m2)
    torch.testing.assert_close(back.loc, loc)
    torch.testing.assert_close(back.covariance, cov, rtol=1e-7, atol=1e-9)
    via_tril = FullGaussianQ.from_scale_tril(loc, q.scale_tril)
    torch.testing.assert_close(via_tril.precision, q.precision)


@settings(max_examples=30, deadline=None)
@given(d=dims, seed=seeds)
def test_diag_round_trips(d: int, seed: int) -> None:
    loc = random_vec(d, seed)
    var = torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=F64) * 5 + 0.1
    q = DiagGaussianQ.from_variance(loc, var)
    torch.testing.assert_close(q.covariance, torch.diag(var))
    eta1, eta2 = q.natural_params()
    torch.testing.assert_close(eta1, loc / var)
    torch.testing.assert_close(eta2, -0.5 / var)
    back = DiagGaussianQ.from_natural(eta1, eta2)
    torch.testing.assert_close(back.loc, loc)
    torch.testing.assert_close(back.variance, var)
    m1, m2 = q.mean_params()
    torch.testing.assert_close(m2, var + loc.square())
    back = DiagGaussianQ.from_mean_params(m1, m2)
    torch.testing.assert_close(back.loc, loc)
    torch.testing.assert_close(back.variance, var)


@settings(max_examples=20, deadline=None)
@given(d=dims, seed=seeds)
def test_log_prob_and_entropy_match_torch(d: int, seed: int) -> None:
    cov = random_spd(d, seed, 50.0)
    loc = random_vec(d, seed)
    z = torch.randn(7, 3, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    ref = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)
    q = FullGaussianQ.from_covariance(loc, cov)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    var = cov.diagonal()
    qd = DiagGaussianQ.from_variance(loc, var)
    refd = torch.distributions.Normal(loc, var.sqrt())
    torch.testing.assert_close(qd.log_prob(z), refd.log_prob(z).sum(-1))
    torch.testing.assert_close(qd.entropy(), refd.entropy().sum())


@pytest.mark.parametrize("family", ["full", "diag"])
def test_sampling_moments(family: str) -> None:
    d = 3
    cov = random_spd(d, 3, 20.0)
    loc = random_vec(d, 3)
    if family == "diag":
        cov = torch.diag(cov.diagonal())
        q = DiagGaussianQ.from_variance(loc, cov.diagonal())
    else:
        q = FullGaussianQ.from_covariance(loc, cov)
    g = torch.Generator().manual_seed(0)
    z = q.sample((40_000,), generator=g)
    assert z.shape == (40_000, d) and not z.requires_grad
    torch.testing.assert_close(z.mean(0), loc, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.15, rtol=0.03)
    # same generator state -> same draws
    z1 = q.sample((4,), generator=torch.Generator().manual_seed(5))
    z2 = q.sample((4,), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z1, z2)


def test_rsample_is_differentiable() -> None:
    loc = torch.zeros(2, dtype=F64, requires_grad=True)
    q = DiagGaussianQ(loc, torch.ones(2, dtype=F64))
    q.rsample((5,), generator=torch.Generator().manual_seed(0)).sum().backward()
    torch.testing.assert_close(loc.grad, torch.full((2,), 5.0, dtype=F64))


def test_non_pd_covariance_rejected() -> None:
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)  # eigenvalues 3, -1
    with pytest.raises(ValueError, match="covariance must be positive definite"):
        FullGaussianQ.from_covariance(torch.zeros(2, dtype=F64), bad)
    with pytest.raises(ValueError, match="precision must be positive definite"):
        FullGaussianQ(torch.zeros(2, dtype=F64), bad)
    with pytest.raises(ValueError, match="eta2"):
        FullGaussianQ.from_natural(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="m2 - m1"):
        DiagGaussianQ.from_mean_params(torch.ones(2), torch.ones(2) * 0.5)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: FullGaussianQ(torch.zeros(2), torch.eye(3)), "shape"),
        (
            lambda: FullGaussianQ(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])),
            "symmetric",
        ),
        (lambda: FullGaussianQ(torch.zeros(2, 1), torch.eye(2)), "loc"),
        (lambda: DiagGaussianQ(torch.zeros(2), torch.tensor([1.0, -1.0])), "precision"),
        (lambda: DiagGaussianQ(torch.zeros(2), torch.ones(3)), "precision"),
        (lambda: DiagGaussianQ(torch.tensor([0.0, math.nan]), torch.ones(2)), "finite"),
        (lambda: DiagGaussianQ.from_variance(torch.zeros(1), torch.zeros(1)), "variance"),
        (lambda: FullGaussianQ.from_scale_tril(torch.zeros(2), -torch.eye(2)), "scale_tril"),
    ],
)
def test_bad_parameters(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_log_prob_rejects_wrong_dimension() -> None:
    q = FullGaussianQ(torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 3\)"):
        q.log_prob(torch.zeros(5, 2))
