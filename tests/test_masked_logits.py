"""Masked logits (issue 12, defect 1): -inf logits give the maths of the legal-only distribution.

References are the renormalised legal-only distribution and ``torch.distributions`` in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from natgrad.distributions import Bernoulli, Categorical, MultiCategorical, NonFiniteError
from natgrad.fisher import GGNFisher, KLHessianFisher, MLPFisher
from natgrad.linalg import trust_region_step
from natgrad.optim._common import output_cotangents
from natgrad.params import flatten, functional_model

INF = math.inf
LOGITS = [[0.3, -INF, 1.2, -0.5], [-INF, -INF, 0.0, 2.0], [0.1, 0.2, -0.3, -INF]]
LEGAL = [[0, 2, 3], [2, 3], [0, 1, 2]]


def _legal_only(logits: torch.Tensor, row: int) -> torch.distributions.Categorical:
    return torch.distributions.Categorical(logits=logits[row, LEGAL[row]])


def test_categorical_entropy_log_prob_kl_match_the_legal_only_distribution(float64):
    logits = torch.tensor(LOGITS)
    c = Categorical(logits)
    ref = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(c.entropy(), ref.entropy())
    for row in range(len(LEGAL)):
        legal = _legal_only(logits, row)
        assert float(c.entropy()[row]) == pytest.approx(float(legal.entropy()), rel=1e-12)
        for k, a in enumerate(LEGAL[row]):
            value = torch.zeros(3, dtype=torch.long)
            value[row] = a
            lp = c.log_prob(value)[row]
            assert float(lp) == pytest.approx(float(legal.log_prob(torch.tensor(k))), rel=1e-12)
    torch.testing.assert_close(c.kl(Categorical(logits)), torch.zeros(3))
    other = logits + torch.tensor([0.5, -1.0, 2.0, 0.0])  # the same mask, other probabilities
    expected = torch.distributions.kl_divergence(ref, torch.distributions.Categorical(logits=other))
    torch.testing.assert_close(c.kl(Categorical(other)), expected)
    assert torch.isfinite(c.kl(Categorical(other))).all()


def test_categorical_gradients_stay_finite_with_masks(float64):
    logits = torch.tensor(LOGITS, requires_grad=True)
    c = Categorical(logits)
    actions = torch.tensor([2, 3, 1])
    total = c.entropy().sum() + c.log_prob(actions).sum() + c.detach().kl(c).sum()
    (grad,) = torch.autograd.grad(total, logits)
    assert torch.isfinite(grad).all()


def test_kl_is_inf_when_other_masks_what_self_allows(float64):
    p = Categorical(torch.tensor([[0.0, 0.0]]))
    q = Categorical(torch.tensor([[0.0, -INF]]))
    assert float(p.kl(q)) == INF
    assert float(q.kl(p)) == pytest.approx(math.log(2.0))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=q.logits),
        torch.distributions.Categorical(logits=p.logits),
    )
    assert float(q.kl(p)) == pytest.approx(float(ref))


def test_log_prob_of_a_masked_category_is_minus_inf_and_cannot_pass_silently(float64):
    """-inf by nature; a surrogate built on it is NaN, which trust_region_step refuses."""
    net = nn.Linear(2, 3)
    params = list(net.parameters())
    mask = torch.tensor([0.0, -INF, 0.0])
    x = torch.randn(4, 2)
    action = torch.tensor([0, 1, 2, 0])  # action 1 is masked
    dist = Categorical(net(x) + mask)
    lp = dist.log_prob(action)
    assert float(lp[1].detach()) == -INF and torch.isfinite(lp[[0, 2, 3]]).all()
    (g,) = torch.autograd.grad(lp.sum(), net.weight)
    assert torch.isfinite(g).all()
    old_lp = lp.detach()
    loss = -(torch.exp(Categorical(net(x) + mask).log_prob(action) - old_lp)).mean()
    grad = flatten(torch.autograd.grad(loss, params))
    with pytest.raises(ValueError, match="grad contains NaN"):
        trust_region_step(params, grad, lambda v: v, lambda: loss, lambda: 0.0, max_kl=0.01)


def test_multicategorical_with_masks_matches_its_parts(float64):
    logits = torch.tensor([[0.0, -INF, 1.0, -INF, 0.5], [-INF, 0.2, -INF, 3.0, -INF]])
    m = MultiCategorical(logits, [2, 3])
    parts = [
        torch.distributions.Categorical(logits=logits[:, :2]),
        torch.distributions.Categorical(logits=logits[:, 2:]),
    ]
    torch.testing.assert_close(m.entropy(), parts[0].entropy() + parts[1].entropy())
    value = torch.tensor([[0, 2], [1, 1]])
    expected = parts[0].log_prob(value[:, 0]) + parts[1].log_prob(value[:, 1])
    torch.testing.assert_close(m.log_prob(value), expected)
    torch.testing.assert_close(m.kl(MultiCategorical(logits, [2, 3])), torch.zeros(2))
    u = torch.randn(2, 5)
    assert torch.isfinite(m.fisher_mv([u])[0]).all()


def test_output_fisher_with_masks_is_the_legal_only_fisher_embedded(float64):
    logits = torch.tensor(LOGITS)
    c = Categorical(logits)
    u = torch.randn(3, 4)
    (fu,) = c.fisher_mv([u])
    for row in range(3):
        legal = LEGAL[row]
        p = torch.softmax(logits[row, legal], -1)
        f_legal = torch.diag(p) - torch.outer(p, p)
        expected = torch.zeros(4)
        expected[legal] = f_legal @ u[row, legal]
        torch.testing.assert_close(fu[row], expected)


def _masked_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    params = list(net.parameters())
    f = functional_model(net, params)
    return net, params, f, torch.tensor([0.0, -INF, 0.0]), torch.randn(6, 3)


def test_model_fisher_with_masks_equals_the_legal_only_model_fisher(float64):
    net, params, f, mask, x = _masked_model()
    legal = GGNFisher(lambda ps, b: Categorical(f(ps, b)[:, [0, 2]]), params, x).dense()
    ggn = GGNFisher(lambda ps, b: Categorical(f(ps, b) + mask), params, x).dense()
    klh = KLHessianFisher(lambda ps, b: Categorical(f(ps, b) + mask), params, x).dense()
    mlp = MLPFisher(net, x, lambda h: Categorical(h + mask)).dense()
    for dense in (ggn, klh, mlp):
        assert torch.isfinite(dense).all()
        torch.testing.assert_close(dense, legal, rtol=1e-10, atol=1e-12)


def test_sampled_cotangents_never_draw_a_masked_category(float64, monkeypatch):
    """K-FAC/diag sample targets from the model: a masked category has probability 0."""
    logits = torch.tensor([[-INF, 0.0, 1.0], [-INF, -INF, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(*a[0], dtype=k["dtype"]))
    _, cots = output_cotangents(Categorical(logits), "sample")
    (u,) = cots[0]
    p = torch.softmax(logits, -1)
    drawn = (u + p).argmax(-1)  # u = onehot(y) - p
    assert drawn.tolist() == [1, 2]


def test_bernoulli_with_infinite_logits_takes_the_limits(float64):
    logits = torch.tensor([[INF, -INF, 0.3]])
    b = Bernoulli(logits)
    h03 = torch.distributions.Bernoulli(logits=torch.tensor(0.3)).entropy()
    assert float(b.entropy()) == pytest.approx(float(h03), rel=1e-12)
    assert float(b.kl(b)) == 0.0
    lp = b.log_prob(torch.tensor([[1.0, 0.0, 1.0]]))
    assert float(lp) == pytest.approx(float(torch.nn.functional.logsigmoid(torch.tensor(0.3))))
    assert float(b.log_prob(torch.tensor([[0.0, 0.0, 1.0]]))) == -INF
    (fu,) = b.fisher_mv([torch.ones(1, 3)])
    torch.testing.assert_close(
        fu,
        torch.tensor(
            [
                [
                    0.0,
                    0.0,
                    float(torch.sigmoid(torch.tensor(0.3)) * torch.sigmoid(torch.tensor(-0.3))),
                ]
            ]
        ),
    )
    finite = Bernoulli(torch.tensor([[2.0, -1.0, 0.3]]))
    expected = -torch.nn.functional.logsigmoid(torch.tensor(2.0)) - torch.nn.functional.logsigmoid(
        torch.tensor(1.0)
    )
    assert float(b.kl(finite)) == pytest.approx(float(expected), rel=1e-12)
    assert float(finite.kl(b)) == INF
    logits = logits.clone().requires_grad_(True)
    d = Bernoulli(logits)
    (g,) = torch.autograd.grad(d.entropy().sum() + d.detach().kl(d).sum(), logits)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize(
    "logits, match",
    [
        ([[0.0, math.nan]], "NaN"),
        ([[0.0, INF]], r"\+inf"),
        ([[-INF, -INF], [0.0, 1.0]], "every logit is -inf"),
    ],
)
def test_categorical_refuses_nan_plus_inf_and_fully_masked_rows(logits, match):
    with pytest.raises(ValueError, match=match):
        Categorical(torch.tensor(logits))


def test_bernoulli_refuses_nan_logits():
    with pytest.raises(NonFiniteError, match="logits contains NaN"):
        Bernoulli(torch.tensor([[math.nan]]))
