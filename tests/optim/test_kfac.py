"""K-FAC: exact where the factorisation is exact, Monte Carlo close when sampled, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.distributions import Bernoulli, Categorical, DiagGaussian
from natgrad.fisher import GGNFisher
from natgrad.linalg import cg
from natgrad.optim import KFAC, KFACFactorError, NaturalGradient
from natgrad.params import flatten, functional_model
from optim.models import closure_for, exact_fisher, gaussian, mlp


def _fit(kfac: KFAC, model: nn.Module, family, x: torch.Tensor, targets=None):
    with kfac.capture():
        dist = family(model(x))
    kfac.update_factors(dist, targets)
    return dist


class Flat(nn.Module):
    """A conv whose whole output map is one Gaussian/categorical event per image."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x).flatten(1)


@given(
    n_in=st.integers(1, 5),
    n_out=st.integers(1, 4),
    n=st.integers(1, 30),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_linear_gaussian_is_exact_in_expectation(float64, n_in, n_out, n, bias, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias)
    x = torch.randn(n, n_in)
    kfac = KFAC(lin, expectation=True)
    _fit(kfac, lin, gaussian, x)
    ones = [torch.ones(n, 1)] if bias else []
    xa = torch.cat([x, *ones], 1)
    block = kfac.blocks[0]
    torch.testing.assert_close(block.A, xa.T @ xa / n, rtol=0, atol=1e-12)
    torch.testing.assert_close(block.G, torch.eye(n_out), rtol=0, atol=1e-12)
    exact = exact_fisher(lin, gaussian, x)
    assert (kfac.dense() - exact).abs().max() < 1e-10


def test_linear_gaussian_sampled_is_close(float64):
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.randn(400, 3)
    kfac = KFAC(lin, n_samples=200, seed=0)
    _fit(kfac, lin, gaussian, x)
    exact = exact_fisher(lin, gaussian, x)
    # G = (1/N) Σ ε εᵀ over 80 000 standard normal draws: entries within ~0.02 of I.
    assert (kfac.blocks[0].G - torch.eye(2)).abs().max() < 0.03
    rel = (kfac.dense() - exact).abs().max() / exact.abs().max()
    assert rel < 0.05


def test_categorical_output_factor(float64):
    torch.manual_seed(1)
    lin = nn.Linear(4, 5)
    x = torch.randn(50, 4)
    exp = KFAC(lin, expectation=True)
    dist = _fit(exp, lin, Categorical, x)
    p = dist.probs.detach()
    expected = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    assert (exp.blocks[0].G - expected).abs().max() < 1e-12
    sampled = KFAC(lin, n_samples=400, seed=3)
    _fit(sampled, lin, Categorical, x)
    assert (sampled.blocks[0].G - expected).abs().max() < 0.02


def test_empirical_uses_the_data_targets(float64):
    torch.manual_seed(2)
    lin = nn.Linear(3, 4)
    x, y = torch.randn(20, 3), torch.randint(0, 4, (20,))
    kfac = KFAC(lin, empirical=True)
    dist = _fit(kfac, lin, Categorical, x, y)
    g = torch.zeros(20, 4).scatter_(1, y[:, None], 1.0) - dist.probs.detach()
    torch.testing.assert_close(kfac.blocks[0].G, g.T @ g / 20)
    assert "empirical Fisher" in repr(kfac)
    with pytest.raises(ValueError, match="observed targets"):
        _fit(kfac, lin, Categorical, x)


@pytest.mark.parametrize(
    "kwargs,size", [({}, 3), ({"padding": 1, "stride": 2}, 5), ({"padding": "same"}, 4)]
)
def test_conv2d_factor_shapes_and_exactness(float64, kwargs, size):
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, kernel_size=3, **kwargs)
    model = Flat(conv)
    x = torch.randn(6, 2, size, size)
    kfac = KFAC(model, expectation=True)
    _fit(kfac, model, gaussian, x)
    block = kfac.blocks[0]
    assert block.A.shape == (2 * 9 + 1, 2 * 9 + 1) and block.G.shape == (3, 3)
    positions = conv(x).shape[-1] * conv(x).shape[-2]
    # Unit-Gaussian outputs at every position: G = (positions) I and A ⊗ G is the exact Fisher.
    torch.testing.assert_close(block.G, positions * torch.eye(3), rtol=0, atol=1e-12)
    exact = exact_fisher(model, gaussian, x)
    assert (kfac.dense() - exact).abs().max() < 1e-10


def test_conv2d_single_position_categorical_last_layer_factor(float64):
    torch.manual_seed(5)
    model = Flat(nn.Conv2d(1, 4, kernel_size=2))
    x = torch.randn(10, 1, 2, 2)
    kfac = KFAC(model, expectation=True)
    dist = _fit(kfac, model, Categorical, x)
    p = dist.probs.detach()
    expected = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    assert (kfac.blocks[0].G - expected).abs().max() < 1e-12


def test_solve_inverts_the_damped_kronecker_product(float64):
    torch.manual_seed(6)
    model = mlp(3, 4, 2)
    x = torch.randn(40, 3)
    lam = 0.1
    kfac = KFAC(model, damping=lam, expectation=True)
    _fit(kfac, model, Categorical, x)
    g = [torch.randn_like(p) for p in kfac.params]
    nat = flatten(kfac.solve(g))
    blocks = []
    for b in kfac.blocks:
        ta, tg = torch.diagonal(b.A).mean(), torch.diagonal(b.G).mean()
        pi = (ta / tg).sqrt()
        a_d = b.A + pi * lam**0.5 * torch.eye(b.a_dim)
        g_d = b.G + lam**0.5 / pi * torch.eye(b.out_dim)
        damped = torch.kron(g_d, a_d)
        idx = torch.arange(b.out_dim * b.a_dim).reshape(b.out_dim, b.a_dim)
        perm = torch.cat([idx[:, :-1].reshape(-1), idx[:, -1]])
        blocks.append(damped[perm][:, perm])
    expected = torch.linalg.solve(torch.block_diag(*blocks), flatten(g))
    torch.testing.assert_close(nat, expected)
    # quad is the undamped form xᵀ F̂ x
    torch.testing.assert_close(kfac.quad(kfac.solve(g)), nat @ kfac.dense() @ nat)


def test_precondition_in_another_order_and_as_cg_preconditioner(float64):
    torch.manual_seed(7)
    lin = nn.Linear(5, 3)
    x = torch.randn(64, 5) * torch.tensor([1.0, 30.0, 0.03, 5.0, 1.0])  # ill-conditioned A
    lam = 1e-14  # the π-split adds ~√λ to each factor: keep it far below A's spectrum
    kfac = KFAC(lin, damping=lam, expectation=True)
    dist = _fit(kfac, lin, gaussian, x)
    order = list(reversed(kfac.params))
    v = torch.randn(sum(p.numel() for p in order))
    direct = kfac.solve([t.clone() for t in reversed(_split(v, order))])
    torch.testing.assert_close(kfac.precondition(v, params=order), flatten(direct[::-1]))
    fisher = GGNFisher.from_distribution(dist, order, damping=lam)
    plain = cg(fisher.mv, v, max_iter=200, rtol=1e-10)
    pre = cg(
        fisher.mv, v, max_iter=200, rtol=1e-10, preconditioner=lambda r: kfac.precondition(r, order)
    )
    torch.testing.assert_close(pre.x, plain.x, rtol=1e-6, atol=1e-8)
    # K-FAC is exact here, so it is a near-perfect preconditioner.
    assert pre.iterations <= 3 < plain.iterations, (pre.iterations, plain.iterations)
    with pytest.raises(ValueError, match="exactly the preconditioner's"):
        kfac.precondition(v[:-1], params=order[:-1])


def _split(v, like):
    out, i = [], 0
    for p in like:
        out.append(v[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


def test_ema_and_inverse_schedule(float64):
    torch.manual_seed(8)
    lin = nn.Linear(2, 2)
    kfac = KFAC(
        lin,
        factor_decay=0.5,
        inverse_every=3,
        expectation=True,
        damping=lambda s: 0.2 if s < 5 else 0.5,
    )
    xs = [torch.randn(5, 2) for _ in range(2)]
    a = [torch.cat([x, torch.ones(5, 1)], 1) for x in xs]
    for x in xs:
        _fit(kfac, lin, gaussian, x)
    torch.testing.assert_close(kfac.blocks[0].A, 0.5 * (a[0].T @ a[0] + a[1].T @ a[1]) / 5)
    kfac.solve([torch.ones(2, 2), torch.ones(2)])
    assert kfac.inverse_step == 2 and kfac.inverse_damping == pytest.approx(0.2)
    _fit(kfac, lin, gaussian, xs[0])
    kfac.solve([torch.ones(2, 2), torch.ones(2)])
    assert kfac.inverse_step == 2  # not due yet, and λ did not change
    for _ in range(2):
        _fit(kfac, lin, gaussian, xs[0])
    kfac.solve([torch.ones(2, 2), torch.ones(2)])
    assert kfac.inverse_step == 5 and kfac.inverse_damping == pytest.approx(0.5)
    # A schedule whose value moves refreshes the inverses before they are due.
    kfac.damping = lambda s: 0.1 * s
    _fit(kfac, lin, gaussian, xs[0])
    kfac.solve([torch.ones(2, 2), torch.ones(2)])
    assert kfac.inverse_step == 6 and kfac.inverse_damping == pytest.approx(0.6)


def test_non_positive_definite_factors_raise_not_nan(float64):
    lin = nn.Linear(6, 2)
    kfac = KFAC(lin, damping=0.0, expectation=True)
    _fit(kfac, lin, gaussian, torch.randn(3, 6))  # A has rank 3 < 7
    with pytest.raises(KFACFactorError, match=r"factor A of module '<root>' \(Linear\)"):
        kfac.solve([torch.ones(2, 6), torch.ones(2)])
    kfac.damping = lambda step: -1.0
    with pytest.raises(ValueError, match="returned by the schedule"):
        kfac.solve([torch.ones(2, 6), torch.ones(2)])


@pytest.mark.parametrize(
    "layer,kind",
    [
        (nn.LayerNorm(4), "LayerNorm"),
        (nn.Embedding(5, 4), "Embedding"),
        (nn.Conv2d(4, 4, 1, groups=2), "Conv2d"),
    ],
)
def test_unsupported_module_names_path_and_type(layer, kind):
    model = nn.Sequential(nn.Linear(4, 4), layer)
    with pytest.raises(ValueError, match=rf"module '1' \({kind}\).*unsupported='diag'"):
        KFAC(model)


def test_unsupported_diag_fallback_trains(float64):
    torch.manual_seed(9)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 3)
            self.temp = nn.Parameter(torch.ones(()))

        def forward(self, tokens):
            return self.head(self.norm(self.emb(tokens))) * self.temp

    net = Net()
    tokens, y = torch.randint(0, 7, (64,)), torch.randint(0, 3, (64,))
    opt = NaturalGradient(
        net.parameters(),
        lr=0.5,
        damping=1e-2,
        fisher="kfac",
        model=net,
        fisher_options={"unsupported": "diag", "seed": 0},
    )
    kfac = opt.preconditioners[0]
    assert [b.path for b in kfac.blocks] == ["head"]
    assert "'emb' (Embedding)" in repr(kfac) and "'<root>' (Net)" in repr(kfac)
    first = opt.step(closure_for(net, tokens, y))
    for _ in range(20):
        last = opt.step(closure_for(net, tokens, y))
    assert float(last) < float(first)
    assert kfac.dense().shape == (sum(p.numel() for p in net.parameters()),) * 2


def test_capture_errors(float64):
    model = mlp()
    kfac = KFAC(model)
    with pytest.raises(ValueError, match=r"layer 0 \(Linear\) was not called inside"):
        kfac.update_factors(Categorical(model(torch.randn(2, 3))))
    with kfac.capture(), torch.no_grad():
        out = model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="ran under torch.no_grad"):
        kfac.update_factors(Categorical(out))
    with pytest.raises(ValueError, match="no Fisher estimate yet"):
        kfac.solve([torch.zeros_like(p) for p in kfac.params])


def test_bad_options_and_params():
    model = mlp()
    with pytest.raises(ValueError, match="inverse_every"):
        KFAC(model, inverse_every=0)
    with pytest.raises(ValueError, match="unsupported must be"):
        KFAC(model, unsupported="skip")
    with pytest.raises(ValueError, match="exclude each other"):
        KFAC(model, empirical=True, expectation=True)
    with pytest.raises(ValueError, match=r"params\[0\].*not in the model"):
        KFAC(model, params=[nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="damping must be"):
        KFAC(model, damping=-1.0)


def test_weight_only_block_when_bias_left_out(float64):
    torch.manual_seed(10)
    lin = nn.Linear(3, 2)
    x = torch.randn(30, 3)
    kfac = KFAC(lin, params=[lin.weight], expectation=True)
    _fit(kfac, lin, gaussian, x)
    assert kfac.blocks[0].A.shape == (3, 3)
    exact = exact_fisher(lin, gaussian, x, params=[lin.weight])
    assert (kfac.dense() - exact).abs().max() < 1e-10


def test_kfac_optimiser_reduces_loss_and_groups_get_own_kfac(float64):
    torch.manual_seed(11)
    model = mlp(4, 16, 3)
    x, y = torch.randn(128, 4), torch.randint(0, 3, (128,))
    opt = NaturalGradient(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "damping": 0.1}],
        max_kl=1e-3,
        fisher="kfac",
        model=model,
    )
    assert [len(k.blocks) for k in opt.preconditioners] == [1, 1]
    losses = [float(opt.step(closure_for(model, x, y))) for _ in range(30)]
    assert losses[-1] < losses[0]
    assert opt.last_info.predicted_kl == pytest.approx(2e-3)
    assert [g.damping for g in opt.last_info.groups] == [1e-3, 0.1]


def test_gaussian_policy_with_state_independent_log_std(float64):
    torch.manual_seed(12)
    net = nn.Linear(3, 2)
    log_std = nn.Parameter(torch.zeros(2))
    holder = nn.Module()
    holder.net, holder.log_std = net, log_std
    x = torch.randn(50, 3)
    kfac = KFAC(holder, unsupported="diag", expectation=True)
    with kfac.capture():
        dist = DiagGaussian(net(x), log_std)
    kfac.update_factors(dist)
    f = functional_model(net, list(net.parameters()))
    assert kfac.diag is not None
    # Fisher of a state-independent log σ is 2 per coordinate.
    torch.testing.assert_close(kfac.diag.diag[0], torch.full((2,), 2.0))
    assert f is not None


def test_linear_on_sequences(float64):
    torch.manual_seed(13)
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 5, 3)
    kfac = KFAC(lin, expectation=True)
    _fit(kfac, lin, gaussian, x)
    assert (kfac.dense() - exact_fisher(lin, gaussian, x)).abs().max() < 1e-10
    assert F is not None


def test_generic_families_use_autograd_scores(float64):
    torch.manual_seed(14)
    lin = nn.Linear(3, 4)
    x = torch.randn(60, 3)
    exp = KFAC(lin, expectation=True)
    dist = _fit(exp, lin, Bernoulli, x)
    p = dist.probs.detach()
    torch.testing.assert_close(exp.blocks[0].G, torch.diag((p * (1 - p)).mean(0)))
    sampled = KFAC(lin, n_samples=500, seed=1)
    _fit(sampled, lin, Bernoulli, x)
    assert (sampled.blocks[0].G - exp.blocks[0].G).abs().max() < 0.02
    y = torch.randint(0, 2, (60, 4)).double()
    emp = KFAC(lin, empirical=True)
    _fit(emp, lin, Bernoulli, x, y)
    torch.testing.assert_close(emp.blocks[0].G, (y - p).T @ (y - p) / 60)


def test_default_seed_leaves_the_global_generator_alone():
    model = mlp()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a, b = KFAC(model), KFAC(model)
    assert torch.equal(torch.rand(3), expected)
    assert a.seed != b.seed
