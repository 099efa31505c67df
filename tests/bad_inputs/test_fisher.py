"""Bad input to natgrad.fisher: empty or non-finite batches, bad damping, NaN vectors.

The reference Fisher is ``(1/N) Σ Jₙᵀ F_out,ₙ Jₙ + λI`` with ``J`` from
``torch.autograd.functional.jacobian`` in float64 and ``F_out`` in closed form.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from torch import nn

from bad_inputs.harness import (
    DTYPES,
    INF,
    NAN,
    TOL,
    assert_finite,
    assert_matches,
    may_refuse,
    outcome,
    properties,
    refuses,
    special_tensor,
)
from natgrad.distributions import Bernoulli, Categorical, DiagGaussian
from natgrad.fisher import (
    DenseFisher,
    EmpiricalFisher,
    GGNFisher,
    KLHessianFisher,
    MLPFisher,
    fisher_matrix,
    fisher_operator,
    kl_quadratic,
    metric_distance,
    subsample_batch,
    supports_mlp_fisher,
)
from natgrad.params import flatten, functional_model, unflatten

DAMPINGS = [0.0, 1e-3, 1.0, 1e30, 1e300, -1.0, NAN, INF, True]
FROM_X = {"batch", "inputs", "logits", "mean"}
FAMILIES = ["categorical", "masked", "gaussian", "bernoulli"]
KINDS = [
    "ggn", "ggn_nolin", "ggn_from", "kl_hessian", "klh_from", "empirical", "mlp", "by_name",
    "matrix", "dense",
]  # fmt: skip


def damping_bad(damping, dtype) -> bool:
    return (
        isinstance(damping, bool)
        or not 0 <= damping <= torch.finfo(dtype).max
        or math.isnan(damping)
    )


def _out_fisher(family: str, z: torch.Tensor, log_std: torch.Tensor | None) -> torch.Tensor:
    """Closed-form output-space Fisher of one row, float64."""
    if family in ("categorical", "masked"):
        p = torch.softmax(z, -1)
        return torch.diag(p) - torch.outer(p, p)
    if family == "bernoulli":
        return torch.diag(torch.sigmoid(z) * torch.sigmoid(-z))
    assert log_std is not None
    return torch.diag(torch.cat([torch.exp(-2 * log_std), torch.full_like(log_std, 2.0)]))


class Problem:
    """A tiny linear model ``z = W x + b`` of a family, its params and a reference Fisher."""

    def __init__(self, data, dtype, family):
        self.family, self.dtype = family, dtype
        self.k = 3
        torch.manual_seed(data.draw(st.integers(0, 100)))
        self.net = nn.Sequential(nn.Linear(2, self.k)).to(dtype)
        self.params = list(self.net.parameters())
        self.mask = torch.tensor([0.0, -INF, 0.0], dtype=dtype)
        self.bad: set[str] = set()
        if family == "gaussian":
            ls, kind = special_tensor(data, (self.k,), ["nan", "-inf", "huge"], base=1.0)
            if kind != "clean":
                self.bad.add("log_std")
            self.log_std = nn.Parameter(ls.to(dtype))
            self.params.append(self.log_std)
        self.f = functional_model(self.net, self.params[:2])

    def make(self, z, log_std=None):
        if self.family == "categorical":
            return Categorical(z)
        if self.family == "masked":
            return Categorical(z + self.mask)
        if self.family == "bernoulli":
            return Bernoulli(z)
        return DiagGaussian(z, self.log_std if log_std is None else log_std)

    def fn(self, ps, x):
        z = self.f(ps[:2], x)
        return self.make(z, ps[2] if self.family == "gaussian" else None)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        p64 = [p.detach().double() for p in self.params]
        x64 = x.double()
        flat = torch.cat([p.reshape(-1) for p in p64])
        sizes = [p.numel() for p in p64]

        def outputs(v):
            w, b = v[: sizes[0]].view(self.k, 2), v[sizes[0] : sizes[0] + sizes[1]]
            z = x64 @ w.T + b
            if self.family == "gaussian":
                return torch.cat([z, v[-self.k :].expand_as(z)], -1)
            return z

        jac = torch.autograd.functional.jacobian(outputs, flat)  # (N, out, P)
        self.jac = jac
        total = torch.zeros(flat.numel(), flat.numel(), dtype=torch.float64)
        for n in range(x64.shape[0]):
            z = outputs(flat)[n]
            if self.family == "gaussian":
                f_out = _out_fisher("gaussian", z, p64[-1])
            else:
                f_out = _out_fisher(
                    self.family,
                    z[:3] + self.mask.double().nan_to_num(neginf=-1e300)
                    if self.family == "masked"
                    else z,
                    None,
                )
            total += jac[n].T @ f_out @ jac[n]
        return total / max(x64.shape[0], 1)


def _build(kind, prob, x, y, damping):
    if kind in ("ggn", "ggn_nolin"):
        return GGNFisher(prob.fn, prob.params, x, damping=damping, linearize=kind == "ggn")
    if kind == "kl_hessian":
        return KLHessianFisher(prob.fn, prob.params, x, damping=damping)
    if kind in ("ggn_from", "klh_from"):  # from a forward already made (its graph shared)
        cls = GGNFisher if kind == "ggn_from" else KLHessianFisher
        return cls.from_distribution(prob.fn(prob.params, x), prob.params, damping=damping)
    if kind == "empirical":
        return EmpiricalFisher(prob.fn, prob.params, x, y, damping=damping)
    if kind == "mlp":
        ls = prob.log_std if prob.family == "gaussian" else None
        return MLPFisher(prob.net, x, lambda h: prob.make(h), log_std=ls, damping=damping)
    method = "empirical" if kind == "empirical" else "ggn"
    return fisher_operator(prob.fn, prob.params, x, method=method, damping=damping)


def _operators(data, dtype, rows, family):
    prob = Problem(data, dtype, family)
    kind = data.draw(st.sampled_from(KINDS))
    if kind == "empirical" and family not in ("categorical", "gaussian"):
        kind = "ggn"
    damping = data.draw(st.sampled_from(DAMPINGS))
    x64, xkind = special_tensor(data, (rows, 2), ["nan", "+inf"])
    x = x64.to(dtype)
    y = (
        torch.randint(0, 3, (rows,))
        if family == "categorical"
        else torch.randn(rows, 3, dtype=dtype)
    )
    bad = set(prob.bad)
    if rows == 0:
        bad |= {"batch", "inputs", "empty"}
    if xkind != "clean" and rows:
        bad |= {"batch", "inputs"}
        if kind.endswith("_from"):  # the distribution refuses the non-finite outputs
            bad |= {"logits", "mean"}
    if rows == 0 and kind.endswith("_from"):
        bad.add("dist")
    if kind == "matrix":
        m = outcome(bad, lambda: fisher_matrix(prob.fn, prob.params, x))
        if m is not None:
            ref = prob.reference(x)
            assert_matches(m, ref, dtype, scale=ref.abs().max() + 1)
        return
    if kind == "dense":
        ref = prob.reference(x) if not bad else torch.eye(2, dtype=torch.float64)
        bad = {"damping"} if damping_bad(damping, dtype) else set()
        op = outcome(bad, lambda: DenseFisher(ref.to(dtype), damping=damping))
    else:
        if damping_bad(damping, dtype):
            bad.add("damping")
        if kind.endswith("_from") and rows and xkind != "clean" and bad <= FROM_X:
            # from_distribution never sees the batch: the distribution refuses the
            # non-finite outputs, or (±inf Bernoulli logits are legal) the first product does
            op = may_refuse(lambda: _build(kind, prob, x, y, damping), FROM_X)
            if op is not None:
                refuses(lambda: op.mv(torch.ones(op.dim, dtype=dtype)), {"batch"})
            return
        op = outcome(bad, lambda: _build(kind, prob, x, y, damping))
        if op is None:
            return
        if kind == "empirical":
            ref = op.scores.double().T @ op.scores.double() / rows  # checked in test_fisher.py
        else:
            ref = prob.reference(x)
    if op is None:
        return
    lam = float(damping)
    a_ref = ref + lam * torch.eye(ref.shape[0], dtype=torch.float64)
    scale = ref.abs().max() + lam + 1
    assert_matches(op.dense(), a_ref, dtype, scale=scale)
    v64, vkind = special_tensor(data, (op.dim,), ["nan", "+inf", "-inf"])
    v = v64.to(dtype)
    vbad = {"v"} if vkind != "clean" else set()
    out = outcome(vbad, lambda: op.mv(v))
    if out is not None:
        assert_matches(out, a_ref @ v.double(), dtype, scale=scale * v.double().abs().sum())
        vv = v.double()
        assert_matches(op.quad(v), vv @ a_ref @ vv, dtype, scale=scale * vv.abs().sum() ** 2)
        half = 0.5 * vv @ ref @ vv
        assert_matches(op.kl_quadratic(v), half, dtype, scale=scale * vv.abs().sum() ** 2)
        assert_matches(kl_quadratic(op, v), half, dtype, scale=scale * vv.abs().sum() ** 2)
    outcome({"delta"} if vkind != "clean" else set(), lambda: op.kl_quadratic(v))
    if hasattr(op, "jvp") and kind != "empirical":
        vs = unflatten(v, op.params)
        tangents = outcome({"vs"} if vkind != "clean" else set(), lambda: op.jvp(vs))
        if tangents is not None:
            jv = (prob.jac @ v.double()).split(prob.k, dim=-1)  # one block per output param
            for t, r in zip(tangents, jv, strict=True):
                assert_matches(
                    t, r, dtype, scale=float(prob.jac.abs().sum()) * float(v.abs().max())
                )
            back = op.vjp(list(tangents))
            jt = torch.einsum("nop,no->p", prob.jac, torch.cat([t.double() for t in tangents], -1))
            assert_matches(
                flatten(back),
                jt,
                dtype,
                scale=float(prob.jac.abs().sum()) ** 2 * float(v.abs().max()),
            )
    res = outcome({"b"} if vkind != "clean" else set(), lambda: op.solve(v, max_iter=50))
    if res is not None:
        assert_finite(res.x, res.residual_norm)
        if res.converged:
            tol = 1e3 * TOL[dtype]
            resid = float((a_ref @ res.x.double() - v.double()).norm())
            # x is a multiple of the smallest subnormal: where the true x underflows (huge
            # damping, tiny b) the residual cannot drop below ‖A‖·tiny·√n
            tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # smallest subnormal
            floor = float(scale) * tiny * len(v) ** 0.5
            assert (
                resid
                <= tol * (float(v.double().norm()) + float(scale) * float(res.x.double().norm()))
                + floor
            )


test_operators, test_operators_slow = properties(
    _operators,
    data=st.data(),
    dtype=DTYPES,
    rows=st.sampled_from([0, 1, 3]),
    family=st.sampled_from(FAMILIES),
)


def _metric_helpers(data, dtype):
    n = data.draw(st.integers(1, 4))
    d64, dkind = special_tensor(data, (n,), ["nan", "+inf"])
    m64, mkind = special_tensor(data, (n, n), ["nan", "-inf"])
    wrong = data.draw(st.booleans())
    delta = (d64 if not wrong else torch.ones(n + 1, dtype=torch.float64)).to(dtype)
    bad = set()
    if dkind != "clean":
        bad.add("delta")
    if mkind != "clean":
        bad.add("metric")
    if wrong:
        bad |= {"delta", "metric"}
    metric = m64.to(dtype)
    out = outcome(bad, lambda: metric_distance(delta, metric))
    if out is not None:
        dd, mm = delta.double(), metric.double()
        ref = dd @ mm @ dd
        scale = dd.abs() @ mm.abs() @ dd.abs()
        assert_matches(out, ref, dtype, scale=scale)
        assert_matches(kl_quadratic(metric, delta), 0.5 * ref, dtype, scale=scale)
    rows = data.draw(st.sampled_from([0, 1, 5]))
    sub = data.draw(st.sampled_from([None, 0.5, 1.0, 2, 0, -1, 1.5, NAN, True]))
    batch = (torch.randn(rows, 2), torch.arange(rows))
    sbad = set()
    if sub is not None and rows == 0:
        sbad.add("batch")
    ok = sub is None or (isinstance(sub, float) and 0 < sub <= 1)
    ok = ok or (isinstance(sub, int) and not isinstance(sub, bool) and sub >= 1)
    if not ok:
        sbad.add("subsample")
    got = outcome(sbad, lambda: subsample_batch(batch, sub, torch.Generator().manual_seed(0)))
    if got is not None:
        assert got[0].shape[0] == got[1].shape[0] <= rows
        assert torch.equal(got[0], batch[0][got[1]])  # the same rows of every tensor
    assert supports_mlp_fisher(nn.Sequential(nn.Linear(2, 2))) is True
    assert supports_mlp_fisher(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid())) is False


test_metric_helpers, test_metric_helpers_slow = properties(
    _metric_helpers, data=st.data(), dtype=DTYPES
)
