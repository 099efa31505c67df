import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import FAMILIES, make_model
from natgrad.fisher import GGNFisher
from natgrad.linalg import natural_step, trust_region_step
from natgrad.params import flatten, numel


def _problem(family, seed, batch=16, damping=1e-3):
    fn, params = make_model(family, 3, 6, 2, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, generator=g)
    with torch.no_grad():
        old = fn(params, x).detach()
        actions = old.sample(g)
        old_lp = old.log_prob(actions)
    adv = torch.randn(batch, generator=g)

    def loss_fn():
        d = fn(params, x)
        return -(torch.exp(d.log_prob(actions) - old_lp) * adv).mean()

    def kl_fn():
        return old.kl(fn(params, x)).mean()

    grad = flatten(torch.autograd.grad(loss_fn(), params))
    fisher = GGNFisher(fn, params, x, damping=damping)
    return params, grad, fisher, loss_fn, kl_fn


@pytest.mark.parametrize("family", FAMILIES)
@given(seed=st.integers(0, 10_000), max_kl=st.sampled_from([1e-3, 1e-2, 0.1]))
def test_step_never_leaves_kl_above_radius(family, seed, max_kl, float64):
    params, grad, fisher, loss_fn, kl_fn = _problem(family, seed)
    before = [p.detach().clone() for p in params]
    info = trust_region_step(params, grad, fisher.mv, loss_fn, kl_fn, max_kl=max_kl, cg_iters=10)
    kl_now = float(kl_fn().detach())
    assert kl_now <= max_kl
    if info.accepted:
        assert info.kl == pytest.approx(kl_now) and info.improvement > 0
        assert 0 < info.step_fraction <= 1 and info.reason == "accepted"
    else:
        assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_quadratic_model_of_full_step_hits_radius(float64):
    params, grad, fisher, loss_fn, kl_fn = _problem("gaussian", 1, batch=400, damping=0.1)
    p0 = flatten([p.detach() for p in params])
    info = trust_region_step(params, grad, fisher.mv, loss_fn, kl_fn, max_kl=1e-5, cg_iters=100)
    assert info.accepted and info.backtracks == 0 and info.cg.iterations > 0
    delta = flatten([p.detach() for p in params]) - p0
    # β puts the damped quadratic model of the full step exactly on the radius ...
    assert float(0.5 * fisher.quad(delta)) == pytest.approx(1e-5, rel=1e-8)
    # ... and for a small radius the measured KL matches the (undamped) quadratic model.
    assert info.kl == pytest.approx(float(fisher.kl_quadratic(delta)), rel=0.02)
    assert info.kl <= 1e-5


def test_failed_line_search_restores_parameters_bit_for_bit(float64):
    params, grad, fisher, loss_fn, _ = _problem("categorical", 2)
    before = [p.detach().clone() for p in params]
    info = trust_region_step(
        params, grad, fisher.mv, loss_fn, lambda: torch.tensor(1.0), max_kl=0.01, max_backtracks=3
    )
    assert not info.accepted and info.reason == "kl_exceeded" and info.backtracks == 3
    assert info.step_fraction == 0.0 and info.loss_after == info.loss_before
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_no_improvement_and_non_finite_are_reported(float64):
    params, grad, fisher, _, kl_fn = _problem("bernoulli", 3)
    before = [p.detach().clone() for p in params]
    info = trust_region_step(
        params, grad, fisher.mv, lambda: 1.0, kl_fn, max_kl=0.01, loss_before=1.0
    )
    assert info.reason == "no_improvement"
    info = trust_region_step(
        params, grad, fisher.mv, lambda: math.nan, kl_fn, max_kl=0.01, loss_before=1.0
    )
    assert info.reason == "non_finite"
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_cg_breakdown_is_data(float64):
    params, grad, _, loss_fn, kl_fn = _problem("gaussian", 4)
    before = [p.detach().clone() for p in params]
    info = trust_region_step(params, grad, lambda v: -v, loss_fn, kl_fn, max_kl=0.01)
    assert not info.accepted and info.reason == "cg_breakdown" and info.cg.breakdown
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_zero_gradient(float64):
    params, grad, fisher, loss_fn, kl_fn = _problem("gaussian", 5)
    info = trust_region_step(params, torch.zeros_like(grad), fisher.mv, loss_fn, kl_fn, max_kl=0.01)
    assert info.reason == "zero_gradient" and not info.accepted


def test_npg_step_has_fixed_quadratic_kl(float64):
    params, grad, fisher, loss_fn, kl_fn = _problem("gaussian", 6, batch=400, damping=1e-4)
    p0 = flatten([p.detach() for p in params])
    info = natural_step(
        params, grad, fisher.mv, max_kl=1e-5, cg_iters=100, kl_fn=kl_fn, loss_fn=loss_fn
    )
    delta = flatten([p.detach() for p in params]) - p0
    assert info.accepted and info.backtracks == 0
    assert float(0.5 * fisher.quad(delta)) == pytest.approx(1e-5, rel=1e-6)
    assert info.kl == pytest.approx(1e-5, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_kl=0.0), "max_kl must be"),
        (dict(max_kl=-1.0), "max_kl must be"),
        (dict(max_kl=0.01, backtrack_ratio=1.5), "backtrack_ratio"),
        (dict(max_kl=0.01, max_backtracks=0), "max_backtracks"),
    ],
)
def test_bad_step_arguments(kwargs, match, float64):
    params, grad, fisher, loss_fn, kl_fn = _problem("gaussian", 0)
    with pytest.raises(ValueError, match=match):
        trust_region_step(params, grad, fisher.mv, loss_fn, kl_fn, **kwargs)


def test_bad_gradients(float64):
    params, grad, fisher, loss_fn, kl_fn = _problem("gaussian", 0)
    bad = grad.clone()
    bad[0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        trust_region_step(params, bad, fisher.mv, loss_fn, kl_fn, max_kl=0.01)
    with pytest.raises(ValueError, match="entries"):
        trust_region_step(params, grad[:-1], fisher.mv, loss_fn, kl_fn, max_kl=0.01)
    with pytest.raises(ValueError, match="entries"):
        natural_step(params, torch.zeros(numel(params) + 2), fisher.mv, max_kl=0.01)
