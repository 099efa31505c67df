"""The state-dependent Gaussian of gSDE: its law, its KL and its exact Fisher."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.distributions import StateDependentGaussian
from natgrad.fisher import GGNFisher, KLHessianFisher, fisher_matrix
from natgrad.params import functional_model, numel, unflatten


def _make(batch, k, d, seed, shared_column=False):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, d, generator=g)
    log_std = 0.5 * torch.randn(k, 1 if shared_column else d, generator=g) - 0.5
    latent = torch.tanh(torch.randn(batch, k, generator=g))
    return StateDependentGaussian(mean, log_std, latent)


@given(batch=st.integers(1, 4), k=st.integers(1, 4), d=st.integers(1, 3),
       seed=st.integers(0, 10_000), shared=st.booleans())  # fmt: skip
def test_output_fisher_is_the_kl_hessian_in_mean_and_matrix(batch, k, d, seed, shared, float64):
    """fisher_mv equals the Hessian of KL(p_fixed ‖ p) in (mean, L), per sample."""
    p = _make(batch, k, d, seed, shared)
    params = [t.detach().clone().requires_grad_(True) for t in p.params]
    g = torch.Generator().manual_seed(seed + 7)
    v = [torch.randn(t.shape, generator=g) for t in params]
    kl = p.detach().kl(p.with_params(params)).sum()
    grads = torch.autograd.grad(kl, params, create_graph=True)
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, v, strict=True)), params)
    for a, b in zip(hv, p.fisher_mv(v), strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_fisher_of_the_matrix_is_one_rank_one_block_per_action(float64):
    """F_L = 2 w wᵀ within each column j: its dense form has rank one per column."""
    p = _make(1, 3, 2, 0)
    k, d = 3, 2
    cols = []
    for idx in range(k * d):
        e = torch.zeros(k * d)
        e[idx] = 1.0
        cols.append(p.fisher_mv([torch.zeros(1, d), e.reshape(1, k, d)])[1].reshape(-1))
    dense = torch.stack(cols, 1)
    w = p.weights()[0]
    for j in range(d):
        block = dense.reshape(k, d, k, d)[:, j, :, j]
        assert torch.allclose(block, 2 * torch.outer(w[:, j], w[:, j]), atol=1e-12)
        assert torch.linalg.matrix_rank(block) == 1
    assert torch.allclose(dense.reshape(k, d, k, d)[:, 0, :, 1], torch.zeros(k, k))


def _sde_policy(n_in, hidden, d, seed):
    """An MLP whose last hidden layer z(s) drives both the mean and, detached, the std."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh())
    head = nn.Linear(hidden, d)
    log_std = nn.Parameter(0.3 * torch.randn(hidden, d) - 1.0)
    modules = [*body.parameters(), *head.parameters()]
    f_body = functional_model(body, list(body.parameters()))
    f_head = functional_model(head, list(head.parameters()))
    nb = len(list(body.parameters()))

    def fn(ps, x):
        z = f_body(ps[:nb], x)
        return StateDependentGaussian(f_head(ps[nb:-1], z), ps[-1], z.detach())

    return fn, [*modules, log_std]


@given(n_in=st.integers(1, 4), hidden=st.integers(1, 5), d=st.integers(1, 3),
       batch=st.integers(1, 5), seed=st.integers(0, 10_000))  # fmt: skip
def test_ggn_product_is_exact_against_kl_hessian(n_in, hidden, d, batch, seed, float64):
    """Jᵀ F_out J v through a whole gSDE policy equals the seed's double-backprop Fisher."""
    fn, params = _sde_policy(n_in, hidden, d, seed)
    x = torch.randn(batch, n_in, generator=torch.Generator().manual_seed(seed))
    v = torch.randn(numel(params), generator=torch.Generator().manual_seed(seed + 1))
    ggn = GGNFisher(fn, params, x).mv(v)
    for other in (
        KLHessianFisher(fn, params, x).mv(v),
        GGNFisher(fn, params, x, linearize=False).mv(v),
        fisher_matrix(fn, params, x) @ v,
    ):
        assert torch.allclose(ggn, other, atol=1e-10, rtol=1e-8)


def test_small_step_kl_is_half_the_fisher_quadratic(float64):
    """KL(p ‖ p moved) ≈ ½ δᵀFδ for a step of the head and L (the features z held, as the
    Fisher treats them: gSDE's std sees z without gradient)."""
    fn, params = _sde_policy(3, 4, 2, 0)
    x = torch.randn(6, 3)
    fisher = GGNFisher(fn, params, x)
    delta = 1e-4 * torch.randn(numel(params))
    delta[: numel(params[:2])] = 0.0  # the body (z) stays

    moved = [p + dp for p, dp in zip(params, unflatten(delta, params), strict=True)]
    kl = fn(params, x).detach().kl(fn(moved, x)).mean()
    assert kl.item() == pytest.approx(0.5 * fisher.quad(delta).item(), rel=1e-3)


def test_law_log_prob_entropy_and_kl_against_torch(float64):
    p, q = _make(5, 3, 2, 0), _make(5, 3, 2, 1)
    q = StateDependentGaussian(q.mean, q.log_std[0], p.latent)  # the same features
    normal = lambda r: torch.distributions.Independent(torch.distributions.Normal(r.mean, r.std), 1)  # noqa: E731
    x = p.sample(torch.Generator().manual_seed(2))
    assert torch.allclose(p.log_prob(x), normal(p).log_prob(x))
    assert torch.allclose(p.entropy(), normal(p).entropy())
    assert torch.allclose(p.kl(q), torch.distributions.kl_divergence(normal(p), normal(q)))
    assert torch.allclose(p.kl(p), torch.zeros(5), atol=1e-12)
    expected = (p.latent.square() @ torch.exp(2 * p.log_std[0])) + 1e-6
    assert torch.allclose(p.std, expected.sqrt())
    assert torch.equal(p.mode(), p.mean)
    assert p[1:3].batch_shape == (2,) and torch.equal(p[1:3].latent, p.latent[1:3])


def test_held_exploration_matrices_have_the_per_state_law(float64):
    """μ + z ε with ε ~ N(0, e^{2L}) has mean μ and variance Σ_i z_i² e^{2L_ij} per state."""
    p = _make(2, 4, 3, 3)
    eps = p.exploration_matrices(200_000, torch.Generator().manual_seed(0))
    assert eps.shape == (200_000, 4, 3)
    one = p[0:1]
    acts = torch.stack([one.noisy_action(e)[0] for e in eps[:3]])  # (k, d) matrices one at a time
    per_row = one.noisy_action(eps[:3].unsqueeze(1))  # the same, as a batch of matrices
    assert torch.allclose(acts, per_row.squeeze(1))
    noise = torch.einsum("k,nkd->nd", one.latent[0], eps)
    assert torch.allclose(noise.mean(0), torch.zeros(3), atol=4 * one.std.max().item() / 400)
    assert torch.allclose(noise.var(0), one.variance[0] - 1e-6, rtol=0.02)
    assert p.exploration_matrices(generator=torch.Generator().manual_seed(0)).shape == (4, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(latent=torch.ones(3, 2, requires_grad=True)), "requires grad"),
        (dict(latent=torch.ones(4, 2)), "batch dimensions"),
        (dict(log_std=torch.zeros(5, 2)), "does not broadcast"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(mean=torch.zeros(3, 2, dtype=torch.long)), "floating-point"),
        (dict(latent=torch.tensor(1.0)), "event"),
    ],
)
def test_bad_arguments_say_how_to_fix_them(kwargs, match):
    args = dict(mean=torch.zeros(3, 2), log_std=torch.zeros(2, 2), latent=torch.ones(3, 2))
    epsilon = kwargs.pop("epsilon", 1e-6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        StateDependentGaussian(args["mean"], args["log_std"], args["latent"], epsilon=epsilon)


def test_kl_needs_the_same_family():
    from natgrad.distributions import DiagGaussian

    p = _make(2, 2, 2, 0)
    with pytest.raises(ValueError, match="same family"):
        p.kl(DiagGaussian(torch.zeros(2, 2), torch.zeros(2)))
    assert math.isfinite(float(p.entropy().sum()))
