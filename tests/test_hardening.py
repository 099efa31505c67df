"""Regression tests of issue 12 (defects 3-7): each failed before its fix.

3. ``max_kl`` is validated by every public entry point of :mod:`natgrad.linalg`;
4. an empty batch raises a ``ValueError`` naming it, everywhere;
5. non-finite ``DiagGaussian`` parameters are refused, naming the tensor;
6. five silent wrong answers (float class indices, a non-symmetric DenseFisher, NaN/inf
   damping in solve_dense, a negative-definite preconditioner, a diverging CG iterate);
7. NaN vector arguments are refused across the operator interface.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from natgrad.distributions import Categorical, DiagGaussian, NonFiniteError
from natgrad.fisher import (
    DenseFisher,
    EmpiricalFisher,
    GGNFisher,
    KLHessianFisher,
    MLPFisher,
    kl_quadratic,
    metric_distance,
)
from natgrad.linalg import (
    cg,
    line_search,
    natural_direction,
    natural_step,
    scaled_direction,
    solve_dense,
    trust_region_step,
)
from natgrad.optim import KFAC, DiagonalFisher, NaturalGradient
from natgrad.params import flatten, functional_model

BAD_MAX_KL = [math.nan, 0.0, -0.01, math.inf, True]


def _linear_problem():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    params = list(net.parameters())
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    f = functional_model(net, params)

    def fn(ps, b):
        return Categorical(f(ps, b))

    loss = nn.functional.cross_entropy(net(x), y)
    grad = flatten(torch.autograd.grad(loss, params))
    old = fn(params, x).detach()
    return net, params, x, y, fn, grad, old


# ---- 3. max_kl --------------------------------------------------------------------------


@pytest.mark.parametrize("max_kl", BAD_MAX_KL)
def test_every_linalg_entry_point_validates_max_kl(max_kl, float64):
    net, params, x, y, fn, grad, old = _linear_problem()
    fisher = GGNFisher(fn, params, x, damping=0.1)
    good = natural_direction(fisher.mv, grad, 0.01)

    def loss_fn():
        return nn.functional.cross_entropy(net(x), y)

    def kl_fn():
        return old.kl(fn(params, x)).mean()

    calls = [
        lambda: natural_direction(fisher.mv, grad, max_kl),
        lambda: scaled_direction(good.x, 1.0, grad, max_kl),
        lambda: line_search(params, good, loss_fn, kl_fn, max_kl=max_kl),
        lambda: natural_step(params, grad, fisher.mv, max_kl=max_kl),
        lambda: trust_region_step(params, grad, fisher.mv, loss_fn, kl_fn, max_kl=max_kl),
    ]
    before = flatten([p.detach() for p in params])
    for call in calls:
        with pytest.raises(ValueError, match="max_kl must be a finite number > 0"):
            call()
    assert torch.equal(flatten([p.detach() for p in params]), before)


# ---- 4. empty batches -------------------------------------------------------------------


def test_fisher_operators_refuse_an_empty_batch(float64):
    net, params, x, y, fn, grad, old = _linear_problem()
    mlp = nn.Sequential(nn.Linear(3, 2))
    empty = x[:0]
    builds = [
        lambda: GGNFisher(fn, params, empty),
        lambda: GGNFisher(fn, params, empty, linearize=False),
        lambda: KLHessianFisher(fn, params, empty),
        lambda: EmpiricalFisher(fn, params, empty, y[:0]),
        lambda: MLPFisher(mlp, empty, Categorical),
        lambda: GGNFisher.from_distribution(fn(params, empty), params),
        lambda: KLHessianFisher.from_distribution(fn(params, empty), params),
    ]
    for build in builds:
        with pytest.raises(ValueError, match="empty"):
            build()


@pytest.mark.parametrize("fisher", ["ggn", "kl_hessian", "empirical", "kfac", "diag"])
def test_natural_gradient_refuses_an_empty_batch(fisher, float64):
    model = nn.Sequential(nn.Linear(3, 2))
    opt = NaturalGradient(
        model.parameters(), lr=0.1, fisher=fisher, model=model if fisher == "kfac" else None
    )
    x, y = torch.randn(0, 3), torch.zeros(0, dtype=torch.long)

    def closure():
        logits = model(x)
        return logits.sum() * 0.0, Categorical(logits), y

    before = flatten([p.detach() for p in model.parameters()])
    with pytest.raises(ValueError, match="empty batch"):
        opt.step(closure)
    assert torch.equal(flatten([p.detach() for p in model.parameters()]), before)


def test_preconditioners_refuse_an_empty_batch(float64):
    model = nn.Sequential(nn.Linear(3, 2))
    kfac, diag = KFAC(model), DiagonalFisher(list(model.parameters()))
    with kfac.capture():
        dist = Categorical(model(torch.randn(0, 3)))
    for prec in (kfac, diag):
        with pytest.raises(ValueError, match="empty"):
            prec.update_factors(dist)


# ---- 5. non-finite DiagGaussian parameters ----------------------------------------------


@pytest.mark.parametrize(
    "mean, log_std, name",
    [
        ([[0.0, math.nan]], [0.0, 0.0], "mean"),
        ([[0.0, math.inf]], [0.0, 0.0], "mean"),
        ([[0.0, 0.0]], [0.0, math.nan], "log_std"),
        ([[0.0, 0.0]], [0.0, -math.inf], "log_std"),
        ([[0.0, 0.0]], [math.inf, 0.0], "log_std"),
        ([[0.0, 0.0]], [-400.0, 0.0], "log_std"),  # 1/σ² overflows float64
    ],
)
def test_diag_gaussian_refuses_non_finite_parameters(mean, log_std, name, float64):
    with pytest.raises(NonFiniteError, match=f"^{name} "):
        DiagGaussian(torch.tensor(mean), torch.tensor(log_std))


def test_ggn_fisher_at_minus_inf_log_std_is_refused_naming_it(float64):
    net = nn.Linear(2, 2)
    log_std = nn.Parameter(torch.tensor([0.0, -math.inf]))
    params = [*net.parameters(), log_std]
    f = functional_model(net, params[:-1])

    def fn(ps, b):
        return DiagGaussian(f(ps[:-1], b), ps[-1])

    with pytest.raises(ValueError, match="log_std"):
        GGNFisher(fn, params, torch.randn(4, 2))


# ---- 6. silent wrong answers --------------------------------------------------------------


def test_categorical_refuses_non_integer_actions():
    c = Categorical(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="integer class indices"):
        c.log_prob(torch.tensor([0.7]))
    with pytest.raises(ValueError, match="outside"):
        c.log_prob(torch.tensor([3]))


def test_dense_fisher_refuses_a_non_symmetric_matrix():
    with pytest.raises(ValueError, match="symmetric"):
        DenseFisher(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    DenseFisher(torch.tensor([[1.0, 0.5], [0.5 + 1e-9, 1.0]]))  # rounding is fine


@pytest.mark.parametrize("damping", [math.nan, math.inf, -1.0, True])
def test_solve_dense_validates_damping(damping):
    with pytest.raises(ValueError, match="damping"):
        solve_dense(torch.eye(2), torch.ones(2), damping=damping)


def test_cg_reports_a_negative_definite_preconditioner_as_breakdown(float64):
    a = torch.diag(torch.linspace(1.0, 10.0, 6))
    r = cg(lambda v: a @ v, torch.ones(6), preconditioner=lambda v: -v)
    assert r.breakdown and r.status == "breakdown" and not r.converged


def _singular(seed: int, n: int = 8, rank: int = 3):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.cat(
        [torch.rand(rank, generator=g, dtype=torch.float64) + 0.5, torch.zeros(n - rank)]
    )
    return q @ torch.diag(eig) @ q.T, torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed", [14, 15, 17, 20, 24, 28])  # were "max_iter", ‖x‖ ≈ 1e16-1e18
def test_cg_flags_a_singular_system_with_b_outside_the_range(seed):
    a, b = _singular(seed)
    r = cg(lambda v: a @ v, b)
    assert r.status in ("breakdown", "diverged") and not r.converged


def _ill_posed():
    """diag(1, 2⁻⁵⁶) (κ = 2⁵⁶ > 1/ε) and a preconditioner that steers CG into its small
    direction: exact binary numbers, so every run takes the same path."""
    a = torch.tensor([1.0, 2.0**-56], dtype=torch.float64)
    s = torch.tensor([1.0, 2.0**66], dtype=torch.float64)
    return (lambda v: a * v), (lambda v: s * v), torch.ones(2, dtype=torch.float64)


def test_cg_diverged_flag_certifies_a_numerically_singular_system():
    matvec, pre, b = _ill_posed()
    r = cg(matvec, b, preconditioner=pre)
    assert r.diverged and r.status == "diverged" and not r.converged
    assert float(r.x.norm()) > 1e16
    well = cg(lambda v: torch.tensor([1.0, 1e-6], dtype=torch.float64) * v, b)
    assert well.converged and not well.diverged


def test_a_diverged_direction_is_unusable_and_reported(float64):
    matvec, pre, b = _ill_posed()
    d = natural_direction(matvec, b, 0.01, preconditioner=pre)
    assert not d.usable and d.failure == "cg_diverged"
    p = nn.Parameter(torch.zeros(2))
    info = natural_step([p], b, None, max_kl=0.01, direction=d)
    assert info.reason == "cg_diverged" and not info.accepted and torch.equal(p, torch.zeros(2))


# ---- 7. NaN vector arguments --------------------------------------------------------------


def _operators():
    net, params, x, y, fn, grad, old = _linear_problem()
    mlp = nn.Sequential(nn.Linear(3, 2))
    return [
        DenseFisher(torch.eye(8)),
        GGNFisher(fn, params, x),
        KLHessianFisher(fn, params, x),
        EmpiricalFisher(fn, params, x, y),
        MLPFisher(mlp, x, Categorical),
    ]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_operator_interface_refuses_nan_vectors(bad, float64):
    for op in _operators():
        v = torch.ones(op.dim)
        v[0] = bad
        for call, name in [
            (op.mv, "v"),
            (op.quad, "v"),
            (op.kl_quadratic, "delta"),
            (lambda t, op=op: kl_quadratic(op, t), "delta"),
            (lambda t, op=op: op.solve(t), "b"),
        ]:
            with pytest.raises(ValueError, match=f"^{name} contains NaN or inf"):
                call(v)
    m = torch.eye(3)
    v = torch.tensor([1.0, bad, 0.0])
    with pytest.raises(ValueError, match="^delta contains NaN or inf"):
        metric_distance(v, m)
    with pytest.raises(ValueError, match="^delta contains NaN or inf"):
        kl_quadratic(m, v)
    with pytest.raises(ValueError, match="^metric contains NaN or inf"):
        metric_distance(torch.ones(3), m * bad)
