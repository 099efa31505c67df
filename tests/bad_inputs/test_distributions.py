"""Bad input to natgrad.distributions: NaN/±inf parameters and values, masks, empty batches.

References are computed in float64: ``torch.distributions`` for the categoricals (its
masked-logit handling), closed forms element by element for Bernoulli and the Gaussian.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from bad_inputs.harness import (
    DTYPES,
    INF,
    assert_matches,
    outcome,
    properties,
    special_tensor,
)
from natgrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical

ROWS = st.sampled_from([0, 1, 3])


def _int_value(data, shape, n):
    """Class indices: in range, out of range, or floats; with the bad argument's name."""
    kind = data.draw(st.sampled_from(["ok", "ok", "range", "float"]))
    lo, hi = (0, n - 1) if kind != "range" else (n, n + 2)
    k = math.prod(shape)
    v = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=k, max_size=k)))
    v = v.to(torch.long).reshape(shape)
    if kind == "range" and v.numel():
        return v, {"value"}
    if kind == "float":
        return v.to(torch.float64) + 0.5, {"value"}
    return v, set()


def _categorical(data, dtype, rows):
    n = data.draw(st.integers(1, 4))
    l64, kind = special_tensor(data, (rows, n), ["nan", "+inf", "-inf"])
    bad = {"logits"} if kind in ("nan", "+inf") else set()
    if rows and (l64 == -INF).all(-1).any():
        bad.add("logits")
    logits = l64.to(dtype)
    c = outcome(bad, lambda: Categorical(logits))
    if c is None:
        return
    ref = torch.distributions.Categorical(logits=logits.double(), validate_args=False)
    assert_matches(c.entropy(), ref.entropy(), dtype, scale=1 + math.log(n))
    assert_matches(c.kl(c), torch.zeros(rows), dtype, scale=10.0)
    noise = torch.tensor(
        data.draw(st.lists(st.floats(-1, 1), min_size=rows * n, max_size=rows * n))
    )
    o64 = logits.double() + noise.reshape(rows, n)
    if data.draw(st.booleans()) and rows:  # the other masks one more category: KL may be inf
        j = data.draw(st.integers(0, n - 1))
        keep = (o64 > -INF).sum(-1) > 1
        o64[keep, j] = -INF
    other = Categorical(o64.to(dtype))
    ref_o = torch.distributions.Categorical(logits=other.logits.double(), validate_args=False)
    expected = torch.distributions.kl_divergence(ref, ref_o) if rows else torch.zeros(0)
    assert_matches(c.kl(other), expected, dtype, scale=20.0)
    value, vbad = _int_value(data, (rows,), n)
    lp = outcome(vbad, lambda: c.log_prob(value))
    if lp is not None:
        assert_matches(lp, ref.log_prob(value) if rows else torch.zeros(0), dtype, scale=10.0)
    u64, ukind = special_tensor(data, (rows, n), ["nan", "+inf"])
    fu = outcome({"tangents"} if ukind != "clean" else set(), lambda: c.fisher_mv([u64.to(dtype)]))
    if fu is not None:
        p, u = ref.probs, u64.to(dtype).double()
        assert_matches(fu[0], p * u - p * (p * u).sum(-1, keepdim=True), dtype, scale=4.0)
    if rows:
        x = c.sample(torch.Generator().manual_seed(0))
        assert (ref.probs.gather(-1, x.unsqueeze(-1)) > 0).all()  # never a masked category
        assert torch.equal(c.mode(), logits.argmax(-1))


test_categorical, test_categorical_slow = properties(
    _categorical, data=st.data(), dtype=DTYPES, rows=ROWS
)


def _multicategorical(data, dtype, rows):
    nvec = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    total = sum(nvec) + data.draw(st.sampled_from([0, 0, 0, 1]))  # sometimes a wrong width
    l64, kind = special_tensor(data, (rows, total), ["nan", "-inf"])
    bad = set() if total == sum(nvec) else {"logits"}
    if kind == "nan":
        bad.add("logits")
    for chunk in torch.split(l64[:, : sum(nvec)], nvec, dim=-1):
        if rows and (chunk == -INF).all(-1).any():
            bad.add("logits")
    outcome({"nvec"}, lambda: MultiCategorical(l64.to(dtype), [*nvec[:-1], nvec[-1] + 0.5]))
    m = outcome(bad, lambda: MultiCategorical(l64.to(dtype), nvec))
    if m is None:
        return
    parts = [
        torch.distributions.Categorical(logits=c.double(), validate_args=False)
        for c in torch.split(m.logits, nvec, dim=-1)
    ]
    if rows:
        assert_matches(m.entropy(), sum(p.entropy() for p in parts), dtype, scale=5.0)
    value, vbad = _int_value(data, (rows, len(nvec)), min(nvec))
    lp = outcome(vbad, lambda: m.log_prob(value))
    if lp is not None and rows:
        expected = sum(p.log_prob(value[:, i]) for i, p in enumerate(parts))
        assert_matches(lp, expected, dtype, scale=10.0)
    wrong = torch.zeros(rows, len(nvec) + 1, dtype=torch.long)
    outcome({"value"}, lambda: m.log_prob(wrong))


test_multicategorical, test_multicategorical_slow = properties(
    _multicategorical, data=st.data(), dtype=DTYPES, rows=ROWS
)


def _logsig(x: float) -> float:
    if x == INF:
        return 0.0
    if x == -INF:
        return -INF
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _times(w: float, x: float) -> float:
    """``w·x`` with ``0·(±inf) = 0`` (0 log 0 = 0)."""
    return 0.0 if w == 0 else w * x


def _bernoulli_refs(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor):
    ent, kl, lp = [], [], []
    for x, y, z in zip(
        a.double().view(-1).tolist(), b.double().view(-1).tolist(), v.view(-1).tolist()
    ):
        p = 1.0 / (1.0 + math.exp(-x)) if abs(x) < INF else float(x > 0)
        ent.append(-(_times(p, _logsig(x)) + _times(1 - p, _logsig(-x))))
        kl.append(
            _times(p, _logsig(x) - _logsig(y) if p else 0.0)
            + _times(1 - p, _logsig(-x) - _logsig(-y) if p < 1 else 0.0)
        )
        lp.append(_times(z, _logsig(x)) + _times(1 - z, _logsig(-x)))
    shape = a.shape
    return (torch.tensor(t, dtype=torch.float64).reshape(shape).sum(-1) for t in (ent, kl, lp))


def _bernoulli(data, dtype, rows):
    d = data.draw(st.integers(1, 3))
    l64, kind = special_tensor(data, (rows, d), ["nan", "+inf", "-inf"], base=20.0)
    b = outcome({"logits"} if kind == "nan" else set(), lambda: Bernoulli(l64.to(dtype)))
    if b is None:
        return
    o64, okind = special_tensor(data, (rows, d), ["+inf", "-inf"])
    other = Bernoulli(o64.to(dtype))
    v = torch.tensor(
        data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=rows * d, max_size=rows * d))
    )
    v = v.reshape(rows, d).to(dtype)
    ent, kl, lp = _bernoulli_refs(b.logits, other.logits, v)
    assert_matches(b.entropy(), ent, dtype, scale=d)
    assert_matches(b.kl(other), kl, dtype, scale=30.0 * d)
    assert_matches(b.kl(b), torch.zeros(rows), dtype, scale=30.0 * d)
    assert_matches(b.log_prob(v), lp, dtype, scale=30.0 * d)
    if rows:
        outcome({"value"}, lambda: b.log_prob(v * 0.5 + 0.25))
    pq = torch.sigmoid(b.logits.double()) * torch.sigmoid(-b.logits.double())
    assert_matches(b.fisher_mv([torch.ones_like(b.logits)])[0], pq, dtype)


test_bernoulli, test_bernoulli_slow = properties(
    _bernoulli, data=st.data(), dtype=DTYPES, rows=ROWS
)


def _gaussian(data, dtype, rows):
    d = data.draw(st.integers(1, 3))
    limit = 0.5 * math.log(torch.finfo(dtype).max)
    mean64, mkind = special_tensor(data, (rows, d), ["nan", "+inf", "-inf", "huge"])
    shared = data.draw(st.booleans())
    ls64, lkind = special_tensor(data, (d,) if shared else (rows, d), ["nan", "+inf", "-inf"])
    extreme = data.draw(
        st.sampled_from([0.0, 0.0, limit - 1.0, -(limit - 1.0), limit + 1.0, -(limit + 1.0)])
    )
    if extreme and ls64.numel():
        ls64.view(-1)[0] = extreme
    bad = set()
    if mkind in ("nan", "+inf", "-inf") and mean64.numel():
        bad.add("mean")
    if not (torch.isfinite(ls64).all() and (ls64.abs() < limit).all()):
        bad.add("log_std")
    g = outcome(bad, lambda: DiagGaussian(mean64.to(dtype), ls64.to(dtype)))
    if g is None:
        return
    m, s = g.mean.double(), g.log_std.double()
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    assert_matches(
        g.entropy(), (s + half_log_2pi + 0.5).sum(-1), dtype, scale=(s.abs() + 2).sum(-1)
    )
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    m2 = torch.randn(rows, d, dtype=torch.float64, generator=gen).to(dtype)
    s2 = torch.randn(d, dtype=torch.float64, generator=gen).to(dtype)
    other = DiagGaussian(m2, s2)
    m2, s2 = m2.double(), s2.double()
    # ½σ1²/σ2² and ½(μ1 − μ2)²/σ2², in forms that overflow float64 only where the term does
    half_var = torch.exp(2 * (s - s2) - math.log(2))
    half_mean = ((m - m2) * torch.exp(-s2) * math.sqrt(0.5)) ** 2
    terms = [s2 - s, half_var, half_mean, -0.5]
    kl = sum(terms).sum(-1)
    assert_matches(
        g.kl(other), kl, dtype, scale=sum(torch.as_tensor(t).abs() for t in terms).sum(-1)
    )
    assert_matches(g.kl(g), torch.zeros(rows), dtype, scale=(s.abs() + 1).sum(-1))
    v64, vkind = special_tensor(data, (rows, d), ["nan", "+inf"])
    lp = outcome({"value"} if vkind != "clean" else set(), lambda: g.log_prob(v64.to(dtype)))
    if lp is not None:
        half_z2 = ((v64.to(dtype).double() - m) * torch.exp(-s) * math.sqrt(0.5)) ** 2
        scale = (half_z2 + s.abs() + 1).sum(-1)
        assert_matches(lp, (-half_z2 - s - half_log_2pi).sum(-1), dtype, scale=scale)
    fm, fs = g.fisher_mv([torch.ones(rows, d, dtype=dtype), torch.ones(rows, d, dtype=dtype)])
    assert_matches(fm, torch.exp(-2 * s).expand(rows, d), dtype)
    assert_matches(fs, torch.full((rows, d), 2.0), dtype)


test_gaussian, test_gaussian_slow = properties(_gaussian, data=st.data(), dtype=DTYPES, rows=ROWS)
