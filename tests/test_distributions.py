import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical


def _make(family, batch, dim, seed):
    g = torch.Generator().manual_seed(seed)
    if family == "gaussian":
        return DiagGaussian(
            torch.randn(batch, dim, generator=g), 0.5 * torch.randn(dim, generator=g)
        )
    if family == "categorical":
        return Categorical(torch.randn(batch, dim + 1, generator=g))
    if family == "bernoulli":
        return Bernoulli(torch.randn(batch, dim, generator=g))
    return MultiCategorical(torch.randn(batch, 2 + dim + 1, generator=g), [2, dim + 1])


FAMS = ["gaussian", "categorical", "bernoulli", "multicategorical"]


@pytest.mark.parametrize("family", FAMS)
@given(batch=st.integers(1, 5), dim=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_kl_self_is_zero_and_nonnegative(family, batch, dim, seed, float64):
    p = _make(family, batch, dim, seed)
    q = _make(family, batch, dim, seed + 1)
    assert torch.allclose(p.kl(p), torch.zeros(batch), atol=1e-12)
    assert (p.kl(q) >= -1e-12).all()


@pytest.mark.parametrize("family", FAMS)
@given(batch=st.integers(1, 4), dim=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_output_fisher_is_kl_hessian_in_output_space(family, batch, dim, seed, float64):
    """fisher_mv equals the Hessian of KL(p_fixed ‖ p) with respect to the output params."""
    p = _make(family, batch, dim, seed)
    params = [t.detach().clone().requires_grad_(True) for t in p.params]
    g = torch.Generator().manual_seed(seed + 7)
    v = [torch.randn(t.shape, generator=g) for t in params]
    kl = p.detach().kl(p.with_params(params)).sum()
    grads = torch.autograd.grad(kl, params, create_graph=True)
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, v)), params)
    fv = p.fisher_mv(v)
    for a, b in zip(hv, fv):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("family", FAMS)
def test_entropy_and_log_prob_against_torch(family, float64):
    p = _make(family, 6, 3, 0)
    x = p.sample(torch.Generator().manual_seed(1))
    if family == "gaussian":
        ref = torch.distributions.Independent(torch.distributions.Normal(p.mean, p.std), 1)
    elif family == "categorical":
        ref = torch.distributions.Categorical(logits=p.logits)
    elif family == "bernoulli":
        ref = torch.distributions.Independent(torch.distributions.Bernoulli(logits=p.logits), 1)
    else:
        parts = [torch.distributions.Categorical(logits=c.logits) for c in p.parts]
        lp = sum(d.log_prob(x[:, i]) for i, d in enumerate(parts))
        assert torch.allclose(p.log_prob(x), lp)
        assert torch.allclose(p.entropy(), sum(d.entropy() for d in parts))
        return
    assert torch.allclose(p.log_prob(x), ref.log_prob(x))
    assert torch.allclose(p.entropy(), ref.entropy())
    q = _make(family, 6, 3, 1)
    if family == "gaussian":
        rq = torch.distributions.Independent(torch.distributions.Normal(q.mean, q.std), 1)
    elif family == "categorical":
        rq = torch.distributions.Categorical(logits=q.logits)
    else:
        rq = torch.distributions.Independent(torch.distributions.Bernoulli(logits=q.logits), 1)
    assert torch.allclose(p.kl(q), torch.distributions.kl_divergence(ref, rq))


def test_gaussian_fisher_is_analytic(float64):
    """diag(1/σ², 2) in (μ, log σ)."""
    sigma = torch.tensor([[0.5, 2.0]])
    d = DiagGaussian(torch.zeros(1, 2), sigma.log())
    fm, fs = d.fisher_mv([torch.ones(1, 2), torch.ones(1, 2)])
    assert torch.allclose(fm, 1 / sigma**2)
    assert torch.allclose(fs, torch.full((1, 2), 2.0))


def test_seed_gauss_kl_formula(float64):
    mu1, ls1, mu2, ls2 = -1.0, math.log(0.3), 1.0, math.log(0.3)
    d1 = DiagGaussian(torch.tensor([mu1]), torch.tensor([ls1]))
    d2 = DiagGaussian(torch.tensor([mu2]), torch.tensor([ls2]))
    var1, var2 = math.exp(2 * ls1), math.exp(2 * ls2)
    expected = ls2 - ls1 + (var1 + (mu1 - mu2) ** 2) / (2 * var2) - 0.5
    assert float(d1.kl(d2)) == pytest.approx(expected, rel=1e-12)


def test_rsample_has_gradient():
    mean = torch.zeros(3, 2, requires_grad=True)
    DiagGaussian(mean, torch.zeros(2)).rsample().sum().backward()
    assert torch.equal(mean.grad, torch.ones(3, 2))


def test_mode():
    assert torch.equal(Categorical(torch.tensor([[0.0, 2.0, 1.0]])).mode(), torch.tensor([1]))
    assert torch.equal(Bernoulli(torch.tensor([[-1.0, 2.0]])).mode(), torch.tensor([[0.0, 1.0]]))
    m = MultiCategorical(torch.tensor([[0.0, 1.0, 3.0, 0.0, 0.0]]), [2, 3])
    assert torch.equal(m.mode(), torch.tensor([[1, 0]]))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: DiagGaussian(torch.zeros(2, 3), torch.zeros(4)), "log_std of shape"),
        (lambda: DiagGaussian(torch.tensor(0.0), torch.tensor(0.0)), "at least one dimension"),
        (lambda: Categorical(torch.zeros(2, 3, dtype=torch.long)), "floating-point"),
        (lambda: MultiCategorical(torch.zeros(2, 4), [2, 3]), "sum\\(nvec\\) = 5"),
        (lambda: MultiCategorical(torch.zeros(2, 4), []), "nvec"),
        (lambda: Bernoulli([0.0]), "torch.Tensor"),
    ],
)
def test_bad_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_kl_between_families_is_an_error():
    with pytest.raises(ValueError, match="same family"):
        Categorical(torch.zeros(1, 2)).kl(Bernoulli(torch.zeros(1, 2)))
    with pytest.raises(ValueError, match="shape"):
        Categorical(torch.zeros(1, 2)).kl(Categorical(torch.zeros(1, 3)))


def test_sampling_does_not_cut_the_graph():
    logits = torch.zeros(3, 4, requires_grad=True)
    c = Categorical(logits)
    x = c.sample()
    assert c.log_prob(x).requires_grad
