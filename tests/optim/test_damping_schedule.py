"""A damping schedule is used and reported identically by all five Fisher types (issue 12, #2).

The schedule changes at every step; at step ``k`` (``k`` steps taken before it) every
Fisher type must apply ``λ_k = schedule(k)`` and report it in ``last_info``.  The
reference step is the dense (or K-FAC / diagonal) solve with ``λ_k``, built here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from natgrad.distributions import Categorical
from natgrad.fisher import EmpiricalFisher
from natgrad.linalg import solve_dense
from natgrad.optim import KFAC, NaturalGradient
from natgrad.params import flatten, functional_model
from optim.models import closure_for, exact_fisher, mlp, params_copy


def schedule(step: int) -> float:
    return 0.05 * (step + 1) ** 2  # 0.05, 0.2, 0.45: a new value at every step


def _data(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=g), torch.randint(0, 4, (16,), generator=g)


def _grads(model, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def _reference(fisher: str, model: nn.Module, x, y, lam: float) -> torch.Tensor:
    """``x = (F̂ ⊕ λ)⁻¹ g`` for the Fisher type, from scratch at the current parameters."""
    grads = _grads(model, x, y)
    g = flatten(grads)
    if fisher in ("ggn", "kl_hessian"):
        return solve_dense(exact_fisher(model, Categorical, x), g, damping=lam)
    if fisher == "empirical":
        params = list(model.parameters())
        f = functional_model(model, params)
        emp = EmpiricalFisher(lambda ps, b: Categorical(f(ps, b)), params, x, y).dense()
        return solve_dense(emp, g, damping=lam)
    if fisher == "diag":  # decay 0 and the exact expectation: the diagonal of F
        return g / (torch.diagonal(exact_fisher(model, Categorical, x)) + lam)
    ref_model = copy.deepcopy(model)
    kfac = KFAC(ref_model, damping=lam, factor_decay=0.0, expectation=True)
    with kfac.capture():
        dist = Categorical(ref_model(x))
    kfac.update_factors(dist)
    return flatten(kfac.solve(_grads(ref_model, x, y)))


OPTIONS = {
    "ggn": {},
    "kl_hessian": {},
    "empirical": {},
    "diag": {"decay": 0.0, "expectation": True},
    "kfac": {"factor_decay": 0.0, "expectation": True, "inverse_every": 10},
}


@pytest.mark.parametrize("fisher", list(OPTIONS))
def test_every_fisher_type_uses_and_reports_the_schedule_of_the_step(fisher, float64):
    model = mlp(seed=2)
    x, y = _data()
    opt = NaturalGradient(
        model.parameters(),
        lr=0.3,
        damping=schedule,
        cg_iters=200,
        fisher=fisher,
        model=model if fisher == "kfac" else None,
        fisher_options=OPTIONS[fisher] or None,
    )
    for k in range(3):
        expected = _reference(fisher, model, x, y, schedule(k))
        before = params_copy(model)
        opt.step(closure_for(model, x, y, targets=True))
        moved = (flatten(before) - flatten(params_copy(model))) / 0.3
        assert opt.last_info.groups[0].damping == pytest.approx(schedule(k), rel=1e-15)
        torch.testing.assert_close(moved, expected, rtol=1e-6, atol=1e-9)
