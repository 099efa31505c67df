"""VariationalOnlineNewton: known answers in float64, torch.optim conventions, bad input."""

import io
import math

import numpy
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.vi import (
    BayesianLinearRegression,
    VariationalOnlineNewton,
    posterior_predictive,
)

F64 = torch.float64


def linreg(n=200, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    X[:, 1] += 0.3 * X[:, 0]
    y = X @ torch.tensor([1.0, -0.5, 2.0], dtype=F64) + 0.7 * torch.randn(n, generator=g, dtype=F64)
    return X, y, BayesianLinearRegression(X, y, noise_var=0.5, prior_var=2.0)


def fit_von(X, loss_fn, prior_var, steps, **kw):
    """Full-batch VON on ``loss_fn(w)`` (mean NLL); returns the weights and the optimiser."""
    n, d = X.shape
    w = nn.Parameter(torch.zeros(d, dtype=F64))
    kw = {"lr": 0.5, "betas": (0.9, 0.95), "hess_init": 1.0, "mc_samples": 8, **kw}
    opt = VariationalOnlineNewton(
        [w], ess=n, weight_decay=1.0 / (n * prior_var), antithetic=True,
        generator=torch.Generator().manual_seed(1), **kw,
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss

    hist = []
    for _ in range(steps):
        opt.step(closure)
        hist.append((w.detach().clone(), opt.state[w]["hess"].clone()))
    return w, opt, hist


def test_linear_regression_reaches_the_exact_mean_field_posterior():
    X, y, model = linreg()
    w, opt, hist = fit_von(X, lambda w: 0.5 * ((X @ w - y) ** 2).mean() / 0.5, 2.0, steps=800)
    target = model.mean_field_posterior()
    # Antithetic pairs make E_q[∇ℓ] exact for a quadratic loss, so the mean is exact.
    torch.testing.assert_close(w.detach(), target.loc, rtol=1e-10, atol=1e-10)
    # The precision n (h + δ) is an EMA (β₂ = 0.95) of unbiased estimates of diag A:
    # average the last 600 steps, when h₀ is long forgotten.
    hess = torch.stack([h for _, h in hist[-600:]]).mean(0)
    group = opt.param_groups[0]
    precision = group["ess"] * (hess + group["weight_decay"])
    torch.testing.assert_close(precision, target.precision, rtol=0.03, atol=0)
    std = opt.posterior_std()[0]
    torch.testing.assert_close(
        std, opt.state[w]["hess"].add(group["weight_decay"]).mul(200).rsqrt()
    )


def logistic_moments(X, y, m, std):
    """Exact ``E_q[∇ℓ̄]`` and ``E_q[diag ∇²ℓ̄]`` for logistic regression under a diagonal q.

    ``a = Xθ`` is Gaussian under q, so both are 1-D Gauss-Hermite integrals per row.
    """
    nodes, weights = numpy.polynomial.hermite_e.hermegauss(80)
    nodes, weights = (
        torch.tensor(nodes, dtype=F64),
        torch.tensor(weights / weights.sum(), dtype=F64),
    )
    mu, sd = X @ m, (X.square() @ std.square()).sqrt()
    a = mu[:, None] + sd[:, None] * nodes  # (n, nodes)
    s = torch.sigmoid(a)
    e_s, e_ds = s @ weights, (s * (1 - s)) @ weights
    n = len(y)
    return X.mT @ (e_s - y) / n, X.square().mT @ e_ds / n


def mean_field_logistic(X, y, delta, iters=200):
    """The optimal mean-field Gaussian: fixed point of E_q[∇ℓ̄] + δm = 0, h = E_q[diag ∇²ℓ̄]."""
    n, d = X.shape
    m, h = torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)
    for _ in range(iters):
        g, h = logistic_moments(X, y, m, (n * (h + delta)).rsqrt())
        m = m - (g + delta * m) / (h + delta)
    g, h_new = logistic_moments(X, y, m, (n * (h + delta)).rsqrt())
    assert (g + delta * m).abs().max() < 1e-12 and (h_new - h).abs().max() < 1e-12
    return m, n * (h + delta)


def test_logistic_regression_reaches_the_mean_field_moment_conditions():
    g = torch.Generator().manual_seed(3)
    n, d = 300, 3
    X = torch.randn(n, d, generator=g, dtype=F64)
    logits = X @ torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    y = (torch.rand(n, generator=g, dtype=F64) < torch.sigmoid(logits)).to(F64)
    prior_var = 4.0
    delta = 1.0 / (n * prior_var)
    ref_mean, ref_precision = mean_field_logistic(X, y, delta)

    def mean_nll(w):
        a = X @ w
        return -(y * nn.functional.logsigmoid(a) + (1 - y) * nn.functional.logsigmoid(-a)).mean()

    w, opt, hist = fit_von(X, mean_nll, prior_var, steps=800)
    tail = hist[-600:]
    mean = torch.stack([m for m, _ in tail]).mean(0)
    precision = n * (torch.stack([h for _, h in tail]).mean(0) + delta)
    torch.testing.assert_close(mean, ref_mean, rtol=0.01, atol=0.0)
    torch.testing.assert_close(precision, ref_precision, rtol=0.03, atol=0)


def test_precision_stays_positive_on_a_concave_loss():
    w = nn.Parameter(torch.ones(4, dtype=F64))
    opt = VariationalOnlineNewton([w], lr=0.1, ess=10, betas=(0.0, 0.5), weight_decay=0.0,
                                  hess_init=1.0)  # fmt: skip
    for _ in range(50):
        opt.step(lambda: (opt.zero_grad(), (-(w**2).sum()).backward(), torch.zeros(()))[-1])
        assert torch.all(opt.state[w]["hess"] > 0)


@given(
    h=st.floats(1e-6, 1e3), h_hat=st.floats(-1e6, 1e6), beta2=st.floats(0.0, 0.999999),
    delta=st.floats(0.0, 1.0),
)  # fmt: skip
def test_hessian_update_keeps_h_plus_delta_above_half(h, h_hat, beta2, delta):
    p = torch.tensor([0.0], dtype=F64, requires_grad=True)
    opt = VariationalOnlineNewton([p], lr=0.1, ess=1.0, betas=(0.0, beta2), weight_decay=delta,
                                  hess_init=h)  # fmt: skip
    with torch.no_grad():
        opt._update_group(
            opt.param_groups[0],
            [p],
            [torch.zeros(1, dtype=F64)],
            [torch.tensor([h_hat], dtype=F64)],
        )
    assert float(opt.state[p]["hess"]) + delta >= 0.5 * (h + delta) * (1 - 1e-12)


def make_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 4, generator=g, dtype=F64), torch.randint(0, 3, (32,), generator=g)


def train(net, opt, steps, seed=0):
    x, y = batch(seed)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    return [float(opt.step(closure)) for _ in range(steps)]


def test_closure_and_sampled_params_loops_agree():
    nets = [make_net(), make_net()]
    opts = [VariationalOnlineNewton(n.parameters(), lr=0.2, ess=32, mc_samples=2,
                                    generator=torch.Generator().manual_seed(5)) for n in nets]  # fmt: skip
    train(nets[0], opts[0], 5)
    x, y = batch()
    for _ in range(5):
        for _ in range(2):
            with opts[1].sampled_params(train=True):
                opts[1].zero_grad()
                nn.functional.cross_entropy(nets[1](x), y).backward()
        opts[1].step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_dict_round_trip_continues_identically():
    net = make_net()
    opt = VariationalOnlineNewton(net.parameters(), lr=0.2, ess=32, mc_samples=2, antithetic=True,
                                  generator=torch.Generator().manual_seed(5))  # fmt: skip
    train(net, opt, 4)
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    opt.generator.manual_seed(9)  # both copies continue from the same noise
    train(net, opt, 3, seed=1)

    net2 = make_net(seed=42)
    opt2 = VariationalOnlineNewton(net2.parameters(), lr=1.0, ess=1.0, mc_samples=2,
                                   antithetic=True, generator=torch.Generator().manual_seed(9))  # fmt: skip
    net2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["lr"] == 0.2 and opt2.param_groups[0]["ess"] == 32
    train(net2, opt2, 3, seed=1)
    for a, b in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert s1["step"] == s2["step"] == 7
        torch.testing.assert_close(s1["hess"], s2["hess"], rtol=0, atol=0)


def test_param_groups_frozen_params_and_unused_params():
    net = make_net()
    unused = nn.Parameter(torch.ones(2, dtype=F64))
    net[0].bias.requires_grad_(False)
    frozen_bias = net[0].bias.detach().clone()
    opt = VariationalOnlineNewton(
        [{"params": [net[0].weight, net[0].bias], "lr": 0.0001}, {"params": [*net[2].parameters(), unused]}],
        lr=0.5, ess=32,
    )  # fmt: skip
    w0, w2 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    train(net, opt, 3)
    assert torch.equal(net[0].bias, frozen_bias) and torch.equal(unused, torch.ones(2, dtype=F64))
    assert opt.state[unused]["step"] == 0  # sampled, but never updated: it got no gradient
    step0 = (net[0].weight - w0).abs().max()
    step2 = (net[2].weight - w2).abs().max()
    assert 0 < step0 < 1e-2 * step2


def test_sampled_params_draws_from_the_posterior_and_restores_the_mean():
    p = nn.Parameter(torch.zeros(20000, dtype=F64))
    opt = VariationalOnlineNewton([p], lr=0.1, ess=4.0, weight_decay=0.25, hess_init=0.75)
    with opt.sampled_params():
        draw = p.detach().clone()
    assert torch.equal(p, torch.zeros_like(p))
    assert abs(float(draw.std()) - 0.5) < 0.01  # 1 / sqrt(4 (0.75 + 0.25))
    with pytest.raises(KeyError), opt.sampled_params():
        raise KeyError("boom")
    assert torch.equal(p, torch.zeros_like(p))


def test_antithetic_pairs_mirror_the_noise():
    p = nn.Parameter(torch.zeros(5, dtype=F64))
    opt = VariationalOnlineNewton([p], lr=0.1, ess=1.0, mc_samples=2, antithetic=True)
    draws = []
    for _ in range(2):
        with opt.sampled_params():
            draws.append(p.detach().clone())
    torch.testing.assert_close(draws[0], -draws[1])


def test_non_finite_gradients_skip_the_step_and_leave_the_state():
    net = make_net()
    opt = VariationalOnlineNewton(net.parameters(), lr=0.2, ess=32)
    train(net, opt, 2)
    before = [p.detach().clone() for p in net.parameters()]
    hess = [s["hess"].clone() for s in opt.state.values()]

    def bad():
        opt.zero_grad()
        loss = net(torch.full((2, 4), math.nan, dtype=F64)).sum()
        loss.backward()
        return loss

    opt.step(bad)
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(torch.equal(a, s["hess"]) for a, s in zip(hess, opt.state.values()))
    assert all(s["step"] == 2 for s in opt.state.values())


def test_posterior_predictive_averages_sampled_predictions():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=F64)
    opt = VariationalOnlineNewton(lin.parameters(), lr=0.1, ess=1.0, hess_init=1.0)
    mean_probs = torch.softmax(lin(x), -1)
    torch.testing.assert_close(posterior_predictive(lin, opt, x, 0), mean_probs)
    # identity transform: the average of a linear model over weights ≈ the model at the mean
    avg = posterior_predictive(lin, opt, x, 4000, transform=lambda o: o)
    torch.testing.assert_close(avg, lin(x).detach(), atol=0.15, rtol=0)
    probs = posterior_predictive(lin, opt, x, 8)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, dtype=F64))
    # a wide posterior pulls the average towards uniform
    assert probs.max() < mean_probs.max() or mean_probs.max() < 0.6
    # tight posterior: the average is the mean prediction
    tight = VariationalOnlineNewton(lin.parameters(), lr=0.1, ess=1e12)
    torch.testing.assert_close(
        posterior_predictive(lin, tight, x, 3), mean_probs, atol=1e-5, rtol=0
    )


BAD_ARGS = [
    ({"lr": 0.0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"lr": math.nan}, "lr"),
    ({"ess": 0}, "ess"),
    ({"ess": math.inf}, "ess"),
    ({"weight_decay": -1e-3}, "weight_decay"),
    ({"hess_init": 0.0}, "hess_init"),
    ({"betas": (0.9, 1.0)}, "betas"),
    ({"betas": (0.9,)}, "betas"),
    ({"mc_samples": 0}, "mc_samples"),
    ({"mc_samples": 2.0}, "mc_samples"),
    ({"mc_samples": 3, "antithetic": True}, "mc_samples must be even"),
    ({"clip_radius": 0.0}, "clip_radius"),
    ({"lr": True}, "lr"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_ARGS)
def test_bad_hyperparameters_name_the_argument(kwargs, match):
    args = {"lr": 0.1, "ess": 10.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        VariationalOnlineNewton([nn.Parameter(torch.zeros(2))], **args)


def test_bad_param_group_and_generator():
    p = nn.Parameter(torch.zeros(2))
    opt = VariationalOnlineNewton([p], lr=0.1, ess=10.0)
    with pytest.raises(ValueError, match="ess"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "ess": -1})
    with pytest.raises(TypeError, match="generator"):
        VariationalOnlineNewton([p], lr=0.1, ess=1.0, generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating point"):
        VariationalOnlineNewton([torch.zeros(2, dtype=torch.int64)], lr=0.1, ess=1.0)


def test_step_before_any_backward_is_a_clear_error():
    p = nn.Parameter(torch.zeros(2))
    opt = VariationalOnlineNewton([p], lr=0.1, ess=10.0)
    with pytest.raises(RuntimeError, match="no gradient samples"):
        opt.step()
    with (
        pytest.raises(RuntimeError, match=r"call loss.backward\(\) inside"),
        opt.sampled_params(train=True),
    ):
        pass
    assert torch.equal(p, torch.zeros(2))


def test_posterior_predictive_bad_input():
    lin = nn.Linear(2, 2)
    opt = VariationalOnlineNewton(lin.parameters(), lr=0.1, ess=1.0)
    with pytest.raises(ValueError, match="n_samples"):
        posterior_predictive(lin, opt, torch.zeros(1, 2), -1)
    with pytest.raises(TypeError, match="sampled_params"):
        posterior_predictive(lin, torch.optim.SGD(lin.parameters(), lr=0.1), torch.zeros(1, 2))


def test_matches_ivon_opt_step_for_step():
    """Same update, same noise stream (torch's global generator, one flat draw per sample)."""
    ivon = pytest.importorskip("ivon")
    x, y = batch()
    hess_init, weight_decay, lr = 0.5, 1e-3, 0.3
    nets = [make_net(), make_net()]
    theirs = ivon.IVON(nets[0].parameters(), lr=lr, ess=32, hess_init=hess_init, beta2=0.999,
                       weight_decay=weight_decay)  # fmt: skip
    ours = VariationalOnlineNewton(
        nets[1].parameters(), lr=lr * (hess_init + weight_decay), ess=32, hess_init=hess_init,
        betas=(0.9, 0.999), weight_decay=weight_decay,
    )  # fmt: skip
    for opt, net in ((theirs, nets[0]), (ours, nets[1])):
        torch.manual_seed(7)
        for _ in range(20):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    sigma = torch.cat([s.reshape(-1) for s in ours.posterior_std()])
    h = theirs.param_groups[0]["hess"]
    torch.testing.assert_close(sigma, (32 * (h + weight_decay)).rsqrt(), rtol=1e-9, atol=0)
