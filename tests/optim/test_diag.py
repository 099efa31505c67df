"""DiagonalFisher: the diagonal of the true Fisher, exactly in expectation and by sampling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad.distributions import Categorical
from natgrad.optim import DiagonalFisher, NaturalGradient
from natgrad.params import flatten
from optim.models import closure_for, exact_fisher, mlp, params_copy


def _fit(diag, model, x, targets=None):
    dist = Categorical(model(x))
    diag.update_factors(dist, targets)
    return dist


@given(seed=st.integers(0, 1000), n=st.integers(1, 20))
def test_expectation_equals_the_exact_diagonal(float64, seed, n):
    model = mlp(seed=seed)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    diag = DiagonalFisher(list(model.parameters()), expectation=True)
    _fit(diag, model, x)
    exact = torch.diagonal(exact_fisher(model, Categorical, x))
    assert (torch.diagonal(diag.dense()) - exact).abs().max() < 1e-10


@pytest.mark.parametrize("per_sample", [True, False])
def test_sampled_estimate_is_close(float64, per_sample):
    model = mlp(seed=1)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    diag = DiagonalFisher(list(model.parameters()), per_sample=per_sample, n_samples=3000, seed=0)
    _fit(diag, model, x)
    exact = torch.diagonal(exact_fisher(model, Categorical, x))
    rel = (torch.diagonal(diag.dense()) - exact).abs().max() / exact.max()
    assert rel < (0.05 if per_sample else 0.2)


def test_empirical_and_per_sample_options(float64):
    model = mlp(seed=2)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    diag = DiagonalFisher(list(model.parameters()), empirical=True)
    _fit(diag, model, x, y)
    per = []
    for i in range(10):
        loss = -Categorical(model(x[i : i + 1])).log_prob(y[i : i + 1]).sum()
        per.append(flatten(torch.autograd.grad(loss, list(model.parameters()))))
    expected = torch.stack(per).square().mean(0)
    torch.testing.assert_close(torch.diagonal(diag.dense()), expected)
    assert "empirical Fisher" in repr(diag)
    with pytest.raises(ValueError, match="per_sample=False"):
        DiagonalFisher(list(model.parameters()), per_sample=False, expectation=True)


def test_diag_optimiser_step_is_elementwise(float64):
    model = mlp(seed=3)
    x, y = torch.randn(40, 3), torch.randint(0, 4, (40,))
    opt = NaturalGradient(
        model.parameters(), lr=0.1, damping=1e-2, fisher="diag", fisher_options={"seed": 0}
    )
    before = params_copy(model)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    g = flatten(torch.autograd.grad(loss, list(model.parameters())))
    opt.step(closure_for(model, x, y))
    d = torch.diagonal(opt.preconditioners[0].dense())
    step = flatten(before) - flatten(params_copy(model))
    torch.testing.assert_close(step, 0.1 * g / (d + 1e-2))
    assert opt.last_info.groups[0].cg_iterations is None
    losses = [float(opt.step(closure_for(model, x, y))) for _ in range(30)]
    assert losses[-1] < float(loss.detach())
