"""KFACPreconditioner and DiagonalPreconditioner: known answers and defining properties."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.distributions import Categorical, DiagGaussian
from natgrad.optim import KFAC, DiagonalFisher, DiagonalPreconditioner, KFACPreconditioner
from optim.models import mlp
from optim.precond_models import MODELS, Bag, one_step


@pytest.mark.parametrize("name", ["mlp", "cnn2d"])
@pytest.mark.parametrize("fisher", ["expectation", "empirical"])
def test_kfac_preconditioner_equals_kfac_solve(float64, name, fisher):
    make, inputs, classes = MODELS[name]
    gen = torch.Generator().manual_seed(1)
    x, y = inputs(gen), None
    y = torch.randint(0, classes, (len(x),), generator=gen)
    model, ref = make(), make()
    precond = KFACPreconditioner(model, likelihood="categorical", fisher=fisher, damping=1e-2)
    grads, nat, info = one_step(precond, model, x, y)
    kfac = KFAC(ref, damping=1e-2, **{fisher: True})
    with kfac.capture():
        dist = Categorical(ref(x))
    kfac.update_factors(dist, y)
    for got, want in zip(nat, kfac.solve(grads), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    for a, b in zip(precond.blocks, kfac.blocks, strict=True):
        torch.testing.assert_close(a.A, b.A)
        torch.testing.assert_close(a.G, b.G)
    assert info.status == "preconditioned" and info.factors_updated and info.inverses_updated
    dot = sum(float((g * n).sum()) for g, n in zip(grads, nat, strict=True))
    assert info.grad_dot == pytest.approx(dot)


@given(seed=st.integers(0, 2**16), batch=st.integers(1, 9), hidden=st.integers(1, 6))
def test_diagonal_preconditioner_equals_diagonal_fisher_mlp(float64, seed, batch, hidden):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batch, 3, generator=gen), torch.randint(0, 4, (batch,), generator=gen)
    model, ref = mlp(3, hidden, 4, seed), mlp(3, hidden, 4, seed)
    precond = DiagonalPreconditioner(model, likelihood="categorical", fisher="empirical")
    grads, nat, _ = one_step(precond, model, x, y)
    diag = DiagonalFisher(list(ref.parameters()), damping=1e-3, empirical=True)
    diag.update_factors(Categorical(ref(x)), y)
    for got, want in zip(nat, diag.solve(grads), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "bag"])
def test_diagonal_preconditioner_equals_diagonal_fisher_layers(float64, name):
    gen = torch.Generator().manual_seed(3)
    if name == "bag":
        make, classes = Bag, 4
        x = torch.randint(0, 7, (5, 6), generator=gen)
        x[0, :3] = 2  # a token repeated within one example
    else:
        make, inputs, classes = MODELS[name]
        x = inputs(gen)
    y = torch.randint(0, classes, (len(x),), generator=gen)
    model, ref = make(), make()
    precond = DiagonalPreconditioner(model, likelihood="categorical", fisher="expectation")
    grads, nat, _ = one_step(precond, model, x, y)
    diag = DiagonalFisher(list(ref.parameters()), damping=1e-3, expectation=True)
    diag.update_factors(Categorical(ref(x)))
    for got, want in zip(nat, diag.solve(grads), strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-9)


def test_one_kfac_step_solves_linear_least_squares(float64):
    """One linear layer, Gaussian output: K-FAC is the exact Fisher, the step is Newton's."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=gen), torch.randn(50, 2, generator=gen)
    model = nn.Linear(4, 2)
    precond = KFACPreconditioner(
        model, likelihood="gaussian", fisher="expectation", damping=0.0, factor_decay=0.0
    )
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    one_step(precond, model, x, y, lambda out, y: 0.5 * (out - y).square().sum(-1).mean())
    opt.step()
    design = torch.cat([x, torch.ones(50, 1)], dim=1)
    best = torch.linalg.lstsq(design, y).solution.T
    torch.testing.assert_close(torch.cat([model.weight, model.bias[:, None]], 1), best)


def test_sampled_fisher_approaches_the_expectation(float64):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    g_exact, g_sampled = [], []
    for fisher, n in (("expectation", 1), ("true", 3000)):
        model = mlp(3, 5, 4)
        p = KFACPreconditioner(model, likelihood="categorical", fisher=fisher, n_samples=n, seed=0)
        one_step(p, model, x, y)
        (g_exact if n == 1 else g_sampled).extend(b.G for b in p.blocks)
    for a, b in zip(g_sampled, g_exact, strict=True):
        assert float((a - b).norm() / b.norm()) < 0.05


def test_gaussian_likelihood_std_scales_G(float64):
    x, y = torch.randn(6, 3), torch.randn(6, 4)
    gs = []
    for std in (1.0, 2.0):
        model = mlp(3, 5, 4)
        p = KFACPreconditioner(
            model, likelihood="gaussian", likelihood_std=std, fisher="expectation"
        )
        one_step(p, model, x, y, F.mse_loss)
        gs.append(p.blocks[-1].G)
    torch.testing.assert_close(gs[1], gs[0] / 4)


def test_callable_likelihood_with_a_learned_std(float64):
    x = torch.randn(6, 3)

    def build(out):
        return DiagGaussian(out[:, :2], out[:, 2:])

    model, ref = mlp(3, 5, 4), mlp(3, 5, 4)
    p = KFACPreconditioner(model, likelihood=build, fisher="expectation")
    out = model(x)
    (-build(out).log_prob(torch.zeros(6, 2)).mean()).backward()
    p.step()
    kfac = KFAC(ref, expectation=True)
    with kfac.capture():
        dist = build(ref(x))
    kfac.update_factors(dist)
    for a, b in zip(p.blocks, kfac.blocks, strict=True):
        torch.testing.assert_close(a.G, b.G)


@pytest.mark.parametrize("cls", [KFACPreconditioner, DiagonalPreconditioner])
def test_kl_clip_scales_the_step_to_the_radius(float64, cls):
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    lr = 0.5
    for kl_clip, binds in ((1e-6, True), (1e3, False)):
        model, free = mlp(3, 5, 4), mlp(3, 5, 4)
        clipped = cls(model, likelihood="categorical", kl_clip=kl_clip, lr=lambda: lr, seed=0)
        grads, nat, info = one_step(clipped, model, x, y)
        _, nat_free, _ = one_step(cls(free, likelihood="categorical", seed=0), free, x, y)
        dot = sum(float((g * n).sum()) for g, n in zip(grads, nat, strict=True))
        assert (info.kl_scale < 1) is binds
        if binds:
            # lr² ν² gᵀ(F̂⊕λ)⁻¹g = κ, and the step is ν times the unclipped one
            assert lr**2 * info.kl_scale * dot == pytest.approx(kl_clip, rel=1e-9)
        torch.testing.assert_close(nat, [info.kl_scale * n for n in nat_free])


def test_damping_schedule_inverse_period_and_factor_period(float64):
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    model = mlp(3, 5, 4)
    p = KFACPreconditioner(
        model,
        likelihood="categorical",
        damping=lambda k: 0.1 * 0.5**k,
        update_factors_every=2,
        inv_update_every=3,
    )
    infos, g_after = [], []
    for _ in range(7):
        model.zero_grad()
        infos.append(one_step(p, model, x, y)[2])
        g_after.append(p.blocks[0].G.clone())
    assert [i.damping for i in infos] == pytest.approx([0.1 * 0.5**k for k in range(7)])
    assert [i.factors_updated for i in infos] == [True, False, True, False, True, False, True]
    assert [i.inverses_updated for i in infos] == [True, False, False, True, False, False, True]
    assert torch.equal(g_after[0], g_after[1]) and not torch.equal(g_after[1], g_after[2])
    assert p.factor_updates == 4 and p.steps == 7


def test_float_damping_change_recomputes_the_inverses(float64):
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    model = mlp(3, 5, 4)
    p = KFACPreconditioner(model, likelihood="categorical", inv_update_every=100)
    model.zero_grad()
    assert one_step(p, model, x, y)[2].inverses_updated
    model.zero_grad()
    assert not one_step(p, model, x, y)[2].inverses_updated
    p.damping = 0.5
    model.zero_grad()
    info = one_step(p, model, x, y)[2]
    assert info.inverses_updated and info.damping == 0.5


@pytest.mark.parametrize("cls", [KFACPreconditioner, DiagonalPreconditioner])
def test_gradient_accumulation_equals_one_full_batch(float64, cls):
    x, y = torch.randn(12, 3), torch.randint(0, 4, (12,))
    model, ref = mlp(3, 5, 4), mlp(3, 5, 4)
    pa = cls(model, likelihood="categorical", fisher="expectation")
    for half in (slice(0, 6), slice(6, 12)):
        (F.cross_entropy(model(x[half]), y[half]) / 2).backward()
    pa.step()
    pb = cls(ref, likelihood="categorical", fisher="expectation")
    one_step(pb, ref, x, y)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_unsupported_layers_keep_their_gradient_and_are_named_once(float64):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.LayerNorm(5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4)
    )
    with pytest.warns(UserWarning, match=r"'1' \(LayerNorm\), '2' \(BatchNorm1d\) unchanged"):
        p = KFACPreconditioner(model, likelihood="categorical")
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    grads, after, _ = one_step(p, model, x, y)
    for i in (2, 3, 4, 5):  # LayerNorm and BatchNorm weights and biases
        assert torch.equal(grads[i], after[i])
    assert not torch.equal(grads[0], after[0])
    assert "unpreconditioned ['1' (LayerNorm), '2' (BatchNorm1d)]" in repr(p)


def test_skip_layers_by_path_or_class_name_is_silent(recwarn):
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Linear(5, 4))
    p = KFACPreconditioner(model, likelihood="categorical", skip_layers=["LayerNorm", "2"])
    assert [b.path for b in p.blocks] == ["0"] and not recwarn.list


def test_forwards_in_eval_mode_or_without_grad_are_not_captured(float64):
    model = mlp(3, 5, 4)
    p = KFACPreconditioner(model, likelihood="categorical")
    with torch.no_grad():
        model(torch.randn(4, 3))
    model.eval()
    model(torch.randn(4, 3))
    assert p.capture.calls == []
    model.train()
    model(torch.randn(4, 3))
    assert len(p.capture.calls) == 2


@pytest.mark.parametrize("cls", [KFACPreconditioner, DiagonalPreconditioner])
def test_state_dict_continues_identically(float64, cls):
    data = [(torch.randn(8, 3), torch.randint(0, 4, (8,))) for _ in range(5)]
    model = mlp(3, 5, 4)
    p = cls(model, likelihood="categorical", seed=3)
    for x, y in data[:3]:
        model.zero_grad()
        one_step(p, model, x, y)
    twin = copy.deepcopy(model)
    q = cls(twin, likelihood="categorical", seed=99)
    q.load_state_dict(p.state_dict())
    for x, y in data[3:]:
        model.zero_grad()
        twin.zero_grad()
        _, a, _ = one_step(p, model, x, y)
        _, b, _ = one_step(q, twin, x, y)
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_smoke_kfac_preconditioned_sgd_learns_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    p = KFACPreconditioner(model, likelihood="categorical", damping=1e-2, kl_clip=1e-2, lr=0.1)
    for _ in range(2):
        for i in range(0, 1500, 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            p.step()
            opt.step()
    with torch.no_grad():
        acc = float((model(x[1500:]).argmax(-1) == y[1500:]).float().mean())
    assert acc > 0.85
