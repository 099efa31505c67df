import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from helpers import FAMILIES, make_model
from natgrad.distributions import DiagGaussian
from natgrad.fisher import (
    DenseFisher,
    EmpiricalFisher,
    GGNFisher,
    KLHessianFisher,
    fisher_matrix,
    fisher_operator,
    kl_quadratic,
    metric_distance,
)
from natgrad.params import flatten, functional_model, numel, unflatten

sizes = dict(
    n_in=st.integers(1, 4),
    hidden=st.integers(1, 6),
    n_out=st.integers(1, 3),
    batch=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)


@pytest.mark.parametrize("family", FAMILIES)
@given(**sizes)
def test_ggn_equals_kl_hessian_equals_dense(family, n_in, hidden, n_out, batch, seed, float64):
    fn, params = make_model(family, n_in, hidden, n_out, seed)
    x = torch.randn(batch, n_in, generator=torch.Generator().manual_seed(seed))
    v = torch.randn(numel(params), generator=torch.Generator().manual_seed(seed + 1))
    ggn = GGNFisher(fn, params, x).mv(v)
    ggn_func = GGNFisher(fn, params, x, linearize=False).mv(v)
    klh = KLHessianFisher(fn, params, x).mv(v)
    dense = fisher_matrix(fn, params, x) @ v
    for other in (ggn_func, klh, dense):
        assert torch.allclose(ggn, other, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_from_distribution_shares_the_forward(family, float64):
    fn, params = make_model(family, 3, 5, 2, 0)
    x = torch.randn(4, 3)
    v = torch.randn(numel(params))
    dist = fn(params, x)
    shared = GGNFisher.from_distribution(dist, params).mv(v)
    shared_klh = KLHessianFisher.from_distribution(fn(params, x), params).mv(v)
    assert torch.allclose(shared, GGNFisher(fn, params, x).mv(v), atol=1e-12)
    assert torch.allclose(shared_klh, shared, atol=1e-10)
    assert all(p.grad is None for p in params)  # products never touch .grad


@pytest.mark.parametrize("family", FAMILIES)
@given(seed=st.integers(0, 10_000))
def test_kl_of_small_step_is_half_quadratic(family, seed, float64):
    """KL(θ, θ+εd) ≈ ½ε²dᵀFd: the Fisher is the metric of KL."""
    fn, params = make_model(family, 3, 4, 2, seed)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
    d = torch.randn(numel(params), generator=torch.Generator().manual_seed(seed + 2))
    op = GGNFisher(fn, params, x)
    p0 = fn(params, x)
    errors = []
    for eps in (1e-3, 1e-4):
        moved = [p.detach() + s for p, s in zip(params, unflatten(eps * d, params))]
        kl = float(p0.kl(fn(moved, x)).mean().detach())
        quad = float(op.kl_quadratic(eps * d))
        errors.append(abs(kl - quad))
        assert kl == pytest.approx(quad, rel=0.05, abs=1e-12)
    # The error is third order: it shrinks ~1000x when ε shrinks 10x.
    assert errors[1] <= errors[0] / 100 + 1e-15


def test_analytic_gaussian_fisher(float64):
    """The Fisher of N(μ, σ²) in (μ, log σ) is diag(1/σ², 2), by every method."""
    for sigma in (0.3, 1.0, 3.0):
        theta = [torch.tensor([0.7]), torch.tensor([math.log(sigma)])]

        def fn(ps, _):
            return DiagGaussian(ps[0].reshape(1, 1), ps[1].reshape(1, 1))

        expected = torch.diag(torch.tensor([1 / sigma**2, 2.0]))
        for method in ("ggn", "kl_hessian"):
            assert torch.allclose(fisher_matrix(fn, theta, method=method), expected)


def test_damping_and_quad(float64):
    fn, params = make_model("categorical", 3, 4, 2, 1)
    x = torch.randn(6, 3)
    v = torch.randn(numel(params))
    plain = GGNFisher(fn, params, x)
    damped = GGNFisher(fn, params, x, damping=0.5)
    assert torch.allclose(damped.mv(v), plain.mv(v) + 0.5 * v)
    assert torch.allclose(damped.quad(v), v @ plain.mv(v) + 0.5 * v @ v)
    assert torch.allclose(damped.kl_quadratic(v), plain.kl_quadratic(v))
    assert torch.allclose(damped.dense(), plain.dense() + 0.5 * torch.eye(numel(params)))
    assert torch.allclose(DenseFisher(plain.dense(), damping=0.5).mv(v), damped.mv(v))


def test_solve_matches_direct(float64):
    fn, params = make_model("gaussian", 3, 4, 2, 3)
    x = torch.randn(20, 3)
    op = GGNFisher(fn, params, x, damping=1e-2)
    b = torch.randn(numel(params))
    result = op.solve(b, max_iter=200, rtol=1e-12)
    assert result.converged and not result.breakdown
    assert torch.allclose(result.x, torch.linalg.solve(op.dense(), b), atol=1e-6)


def test_subsample_uses_fewer_rows(float64):
    fn, params = make_model("categorical", 2, 3, 2, 0)
    x = torch.randn(10, 2)
    g = torch.Generator().manual_seed(0)
    op = GGNFisher(fn, params, x, subsample=0.3, generator=g)
    assert op.dist.batch_size == 3
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(10, generator=g)[:3]
    v = torch.randn(numel(params))
    assert torch.allclose(op.mv(v), GGNFisher(fn, params, x[idx]).mv(v))
    assert GGNFisher(fn, params, x, subsample=4).dist.batch_size == 4


def test_subset_of_parameters(float64):
    """Any subset of a module's parameters can be the variables; the rest are constants."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    last = list(net[2].parameters())
    f = functional_model(net, last)
    x = torch.randn(5, 3)
    from natgrad.distributions import Categorical

    op = GGNFisher(lambda ps, x: Categorical(f(ps, x)), last, x)
    assert op.dim == numel(last)
    full_f = functional_model(net, list(net.parameters()))
    full = fisher_matrix(lambda ps, x: Categorical(full_f(ps, x)), list(net.parameters()), x)
    k = numel(list(net.parameters())) - numel(last)
    assert torch.allclose(op.dense(), full[k:, k:], atol=1e-12)


def test_empirical_fisher_is_mean_score_outer_product(float64):
    fn, params = make_model("categorical", 3, 4, 2, 0)
    x = torch.randn(6, 3)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    emp = EmpiricalFisher(fn, params, x, y)
    scores = []
    for i in range(6):
        lp = fn(params, x[i : i + 1]).log_prob(y[i : i + 1]).sum()
        scores.append(flatten(torch.autograd.grad(lp, params)))
    s = torch.stack(scores)
    assert torch.allclose(emp.dense(), s.T @ s / 6, atol=1e-12)
    v = torch.randn(numel(params))
    assert torch.allclose(emp.mv(v), s.T @ (s @ v) / 6, atol=1e-12)
    assert not torch.allclose(emp.dense(), fisher_matrix(fn, params, x), atol=1e-3)


def test_metric_distance_fixes_the_seed_bug(float64):
    delta = torch.tensor([1.0, -2.0])
    metric = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    seed_loop = sum(delta[i] * delta[i] * metric[i][j] for i in range(2) for j in range(2))
    correct = sum(delta[i] * metric[i][j] * delta[j] for i in range(2) for j in range(2))
    assert float(metric_distance(delta, metric)) == pytest.approx(float(correct))
    assert float(correct) != pytest.approx(float(seed_loop))
    assert float(metric_distance(delta, torch.eye(2))) == pytest.approx(5.0)
    assert float(kl_quadratic(metric, delta)) == pytest.approx(float(correct) / 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda op, n: op.mv(torch.zeros(n + 1, dtype=torch.float64)), "length"),
        (lambda op, n: op.mv(torch.zeros(n, 1, dtype=torch.float64)), "flat vectors"),
        (lambda op, n: op.mv(torch.zeros(n, dtype=torch.float32)), "dtype"),
        (lambda op, n: op.solve(torch.zeros(n - 1, dtype=torch.float64)), "length"),
    ],
)
def test_wrong_vectors_are_rejected(call, match, float64):
    fn, params = make_model("bernoulli", 2, 3, 2, 0)
    op = GGNFisher(fn, params, torch.randn(3, 2))
    with pytest.raises(ValueError, match=match):
        call(op, numel(params))


def test_bad_arguments(float64):
    fn, params = make_model("categorical", 2, 3, 2, 0)
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="damping must be"):
        GGNFisher(fn, params, x, damping=-0.1)
    with pytest.raises(ValueError, match="damping must be"):
        KLHessianFisher(fn, params, x, damping=float("nan"))
    with pytest.raises(ValueError, match="method must be one of"):
        fisher_operator(fn, params, x, method="hessian")
    with pytest.raises(ValueError, match="targets"):
        fisher_operator(fn, params, x, method="empirical")
    with pytest.raises(ValueError, match="subsample"):
        GGNFisher(fn, params, x, subsample=1.5)
    with pytest.raises(ValueError, match="params is empty"):
        GGNFisher(fn, [], x)
    with pytest.raises(ValueError, match="appears twice"):
        GGNFisher(fn, [params[0], params[0]], x)
    with pytest.raises(ValueError, match="not a parameter"):
        functional_model(nn.Linear(2, 2), [torch.zeros(2)])
    with pytest.raises(ValueError, match="metric"):
        metric_distance(torch.zeros(2), torch.zeros(3, 3))
    with torch.no_grad():
        dist = fn(params, x)
    with pytest.raises(ValueError, match="without autograd"):
        GGNFisher.from_distribution(dist, params)


def test_outputs_that_do_not_depend_on_params(float64):
    """A fixed (non-trainable) log σ: its output has no Jacobian, every method still agrees."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    params = list(net.parameters())
    f = functional_model(net, params)
    fixed = torch.tensor([0.3, -0.2])
    x = torch.randn(5, 3)

    def fn(ps, x):
        return DiagGaussian(f(ps, x), fixed)

    v = torch.randn(numel(params))
    shared = GGNFisher.from_distribution(fn(params, x), params).mv(v)
    for other in (
        GGNFisher(fn, params, x).mv(v),
        GGNFisher(fn, params, x, linearize=False).mv(v),
        KLHessianFisher(fn, params, x).mv(v),
    ):
        assert torch.allclose(shared, other, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@given(
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    batch=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_mlp_fisher_equals_ggn(family, activation, hidden, batch, seed, float64):
    """The hand-linearised MLP product is the GGN product, for every output family."""
    from natgrad.distributions import Bernoulli, Categorical, MultiCategorical
    from natgrad.fisher import MLPFisher, supports_mlp_fisher
    from natgrad.rl.policies import mlp

    torch.manual_seed(seed)
    width = {"multicategorical": 5}.get(family, 3)
    net = mlp(4, hidden, width, activation=activation)
    assert supports_mlp_fisher(net)
    log_std = nn.Parameter(0.3 * torch.randn(width)) if family == "gaussian" else None
    make = {
        "gaussian": lambda out: DiagGaussian(out, log_std),
        "categorical": Categorical,
        "bernoulli": Bernoulli,
        "multicategorical": lambda out: MultiCategorical(out, [2, 3]),
    }[family]
    params = list(net.parameters()) + ([log_std] if log_std is not None else [])
    x = torch.randn(batch, 4)
    v = torch.randn(numel(params))
    manual = MLPFisher(net, x, make, log_std=log_std, damping=0.1).mv(v)
    auto = GGNFisher.from_distribution(make(net(x)), params, damping=0.1).mv(v)
    assert torch.allclose(manual, auto, atol=1e-10, rtol=1e-8)


def test_mlp_fisher_rejects_other_modules():
    from natgrad.fisher import MLPFisher, supports_mlp_fisher

    odd = nn.Sequential(nn.Linear(2, 2), nn.ELU(), nn.Linear(2, 2))
    assert not supports_mlp_fisher(odd)
    assert not supports_mlp_fisher(nn.Sequential(nn.Linear(2, 2, bias=False)))
    with pytest.raises(ValueError, match="use GGNFisher"):
        MLPFisher(odd, torch.zeros(1, 2), lambda out: None)
