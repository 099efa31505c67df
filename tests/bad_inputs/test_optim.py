"""Bad input to natgrad.optim: hyperparameters, empty or non-finite batches, NaN gradients.

References: the dense solve ``(F + λI)⁻¹ g`` with the exact Fisher (``exact_fisher``, float64)
for the CG Fisher types; for K-FAC and the diagonal, their factors rebuilt here from the
layer inputs and the categorical output Fisher (``expectation=True``: no sampling).
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st
from optim.models import exact_fisher
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
    special_tensor,
)
from bad_inputs.test_fisher import DAMPINGS
from natgrad.distributions import Categorical
from natgrad.fisher import EmpiricalFisher
from natgrad.optim import KFAC, DiagonalFisher, NaturalGradient
from natgrad.params import flatten, functional_model

FISHERS = ["ggn", "kl_hessian", "empirical", "kfac", "diag"]
STEPS = [None, 0.1, 0.1, 1.0, 1e300, 0.0, -1.0, NAN, INF, True]


def _positive_bad(value) -> bool:
    return isinstance(value, bool) or not 0 < value < INF


def _damping_bad(damping) -> bool:
    return callable(damping) is False and (isinstance(damping, bool) or not 0 <= damping < INF)


def _kfac_factors(model, x):
    """``A = E[ã ãᵀ]`` and ``G = E[diag(p) − p pᵀ]`` of one Linear layer and a categorical."""
    x64 = x.double()
    a_rows = torch.cat([x64, torch.ones(len(x64), 1, dtype=torch.float64)], 1)
    a = a_rows.T @ a_rows / len(x64)
    p = torch.softmax(model(x).detach().double(), -1)
    g = (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)).mean(0)
    return a, g


def _kfac_dense(model, x):
    """``G ⊗ A`` in the flat order ``[vec W, b]``."""
    a, g = _kfac_factors(model, x)
    kron = torch.kron(g, a)
    idx = torch.arange(9).reshape(3, 3)
    perm = torch.cat([idx[:, :2].reshape(-1), idx[:, 2]])
    return kron[perm][:, perm]


def _kfac_reference(model, x, grads, lam):
    """``(G + √λ/π I)⁻¹ [∇W | ∇b] (A + π√λ I)⁻¹``, the π-corrected damped K-FAC solve."""
    a, g = _kfac_factors(model, x)
    pi = math.sqrt((a.trace() / a.shape[0]) / (g.trace() / g.shape[0]))
    root = math.sqrt(lam)
    m = torch.cat([grads[0].double(), grads[1].double().unsqueeze(1)], 1)
    eye = lambda t: torch.eye(t.shape[0], dtype=torch.float64)  # noqa: E731
    sol = torch.linalg.solve(g + root / pi * eye(g), m) @ torch.linalg.inv(a + pi * root * eye(a))
    return torch.cat([sol[:, :-1].reshape(-1), sol[:, -1]])


def _reference(fisher, model, x, y, grads, lam):
    """``(x, F)``: the reference solve and the (undamped) matrix of its predicted KL."""
    g = flatten(grads).double()
    if fisher == "kfac":
        return _kfac_reference(model, x, grads, lam), _kfac_dense(model, x)
    if fisher == "empirical":
        params = list(model.parameters())
        f = functional_model(model, params)
        dense = EmpiricalFisher(lambda ps, b: Categorical(f(ps, b)), params, x, y).dense().double()
    else:
        dense = exact_fisher(model, Categorical, x).double()
    if fisher == "diag":
        return g / (torch.diagonal(dense) + lam), torch.diag(torch.diagonal(dense))
    if fisher == "empirical":
        exact = dense
    else:
        exact = exact_fisher(model, Categorical, x).double()
    return torch.linalg.solve(dense + lam * torch.eye(len(g), dtype=torch.float64), g), exact


def _natural_gradient(data, dtype, fisher, rows):
    torch.manual_seed(data.draw(st.integers(0, 100)))
    model = nn.Linear(2, 3).to(dtype)
    rule = data.draw(
        st.sampled_from(["lr", "lr", "lr", "max_kl", "max_kl", "max_kl", "both", None])
    )
    lr = data.draw(st.sampled_from(STEPS[1:])) if rule in ("lr", "both") else None
    max_kl = data.draw(st.sampled_from(STEPS[1:])) if rule in ("max_kl", "both") else None
    max_lr = data.draw(st.sampled_from([None, None, None, 0.05, -1.0]))
    damping = data.draw(st.sampled_from([1e-3, 1.0] + DAMPINGS[:4] + DAMPINGS[5:]))
    cg_rtol = data.draw(st.sampled_from([1e-10, 1e-10, 1e-10, -1.0, INF]))
    bad = set()
    if (lr is None) == (max_kl is None):
        bad |= {"lr", "max_kl"}
    elif lr is not None and _positive_bad(lr):
        bad.add("lr")
    elif max_kl is not None and _positive_bad(max_kl):
        bad.add("max_kl")
    if max_lr is not None and (lr is not None or max_lr < 0):
        bad.add("max_lr")
    if _damping_bad(damping):
        bad.add("damping")
    if _positive_bad(cg_rtol + 1):
        bad.add("cg_rtol")
    opts = {"expectation": True, "factor_decay" if fisher == "kfac" else "decay": 0.0}
    build = lambda: NaturalGradient(  # noqa: E731
        model.parameters(), lr=lr, max_kl=max_kl, max_lr=max_lr, damping=damping, cg_iters=100,
        cg_rtol=cg_rtol, fisher=fisher, model=model if fisher == "kfac" else None,
        fisher_options=opts if fisher in ("kfac", "diag") else None,
    )  # fmt: skip
    opt = outcome(bad, build)
    if opt is None:
        return
    x64, xkind = special_tensor(data, (rows, 2), ["nan", "+inf"])
    x, y = x64.to(dtype), torch.randint(0, 3, (rows,))

    def closure():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y) if rows else logits.sum()
        return loss, Categorical(logits), y

    before = flatten([p.detach().clone() for p in model.parameters()])
    sbad = {"empty"} if rows == 0 else set()
    if xkind != "clean" and rows:
        sbad.add("logits")
    if float(damping) > torch.finfo(dtype).max:
        sbad.add("damping")
    lam = float(damping)
    if not sbad and lam > 0:  # λ = 0 may leave F singular; then only finiteness is checked
        grads = torch.autograd.grad(closure()[0], list(model.parameters()))
        ref, f_ref = _reference(fisher, model, x, y, grads, lam)
    if fisher in ("diag", "kfac") and float(damping) == 0 and not sbad:
        # a zero diagonal entry or a singular K-FAC factor with λ = 0 is refused, naming damping
        loss = may_refuse(lambda: opt.step(closure), "damping")
        if loss is None:
            return
    else:
        loss = outcome(sbad, lambda: opt.step(closure))
    after = flatten([p.detach().clone() for p in model.parameters()])
    if loss is None:
        assert torch.equal(after, before)
        return
    info = opt.last_info.groups[0]
    assert_finite(loss, info.step_size, info.predicted_kl, info.damping, info.step_norm)
    assert info.damping == float(damping)
    assert torch.isfinite(after).all()
    if info.status != "stepped":
        assert torch.equal(after, before) and info.status in ("zero_curvature", "non_finite")
        return
    if lam == 0:
        return
    moved = (before - after).double()
    quad = float(ref @ f_ref @ ref)
    if lr is not None:
        step_ref = lr * ref
    else:
        step_ref = min(math.sqrt(2 * max_kl / quad), max_lr or INF) * ref
    # float32 loses digits with the conditioning: κ = (‖F‖ + λ)/λ for x, and ‖F‖‖x‖²/xᵀFx
    # for the rounding of xᵀFx in a KL-radius step
    norm_f = float(torch.linalg.matrix_norm(f_ref, 2))
    slack = (norm_f + lam) / lam + (norm_f * float(ref @ ref) / quad if max_kl else 0.0)
    tol = 1e3 * TOL[dtype] + 100 * torch.finfo(dtype).eps * slack
    ulp = 4 * torch.finfo(dtype).eps * float(before.abs().max())  # θ − αx rounds to θ's ulp
    assert float((moved - step_ref).abs().max()) <= tol * float(step_ref.abs().max()) + ulp


test_natural_gradient, test_natural_gradient_slow = properties(
    _natural_gradient,
    data=st.data(),
    dtype=DTYPES,
    fisher=st.sampled_from(FISHERS),
    rows=st.sampled_from([0, 1, 4]),
)


def _preconditioner(data, dtype, kind, rows):
    torch.manual_seed(data.draw(st.integers(0, 100)))
    model = nn.Linear(2, 3).to(dtype)
    damping = data.draw(st.sampled_from(DAMPINGS))
    decay = data.draw(st.sampled_from([0.0, 0.9, 1.0, -0.1, NAN, True]))
    n_samples = data.draw(st.sampled_from([1, 3, 0, True]))
    every = data.draw(st.sampled_from([1, 10, 0, 2.5]))
    bad = set()
    if _damping_bad(damping):
        bad.add("damping")
    if isinstance(decay, bool) or not 0 <= decay < 1:
        bad.add("decay")
    if isinstance(n_samples, bool) or n_samples < 1:
        bad.add("n_samples")
    if kind == "kfac":
        if not isinstance(every, int) or every < 1:
            bad.add("inverse_every")
        build = lambda: KFAC(  # noqa: E731
            model, damping=damping, factor_decay=decay, inverse_every=every,
            expectation=True, n_samples=n_samples,
        )  # fmt: skip
    else:
        build = lambda: DiagonalFisher(  # noqa: E731
            list(model.parameters()), damping=damping, decay=decay, expectation=True,
            n_samples=n_samples,
        )  # fmt: skip
    prec = outcome(bad, build)
    if prec is None:
        return
    x = torch.randn(rows, 2, dtype=torch.float64).to(dtype)
    if kind == "kfac":
        with prec.capture():
            dist = Categorical(model(x))
    else:
        dist = Categorical(model(x))
    done = outcome({"empty"} if rows == 0 else set(), lambda: prec.update_factors(dist))
    if rows == 0:
        return
    g64, gkind = special_tensor(data, (3, 3), ["nan", "-inf"])
    grads = [g64[:, :2].to(dtype), g64[:, 2].to(dtype)]
    lam = float(damping)
    sbad = {"grads"} if gkind != "clean" else set()
    if kind == "kfac" and math.sqrt(lam) * 100 > torch.finfo(dtype).max:
        sbad.add("damping")  # the π-corrected shift √λ·π overflows the factors' dtype
    if lam == 0 and not sbad and may_refuse(lambda: prec.solve(grads), "damping") is None:
        return  # a zero diagonal entry or a singular factor with λ = 0, refused
    xs = outcome(sbad, lambda: prec.solve(grads))
    if xs is None:
        return
    assert done is None
    out = flatten(xs).double()
    dense = exact_fisher(model, Categorical, x).double()
    if kind == "kfac":
        ref = _kfac_reference(model, x, grads, lam)
    else:
        ref = flatten(grads).double() / (torch.diagonal(dense) + lam)
    scale = float(ref.abs().max()) + torch.finfo(dtype).tiny
    assert not torch.isnan(out).any()
    assert float((out - ref).abs().max()) <= 1e3 * TOL[dtype] * scale
    f_hat = _kfac_dense(model, x) if kind == "kfac" else torch.diag(torch.diagonal(dense))
    assert_matches(prec.dense(), f_hat, dtype, scale=float(f_hat.abs().max()))
    quad = prec.quad(xs)
    qref = out @ f_hat @ out
    assert_matches(quad, qref, dtype, scale=1e3 * float(out.abs() @ f_hat.abs() @ out.abs()))
    xs2, quad2 = prec.solve_quad(grads)
    assert torch.equal(flatten(xs2), flatten(xs)) and torch.allclose(quad2, quad)
    bad_xs = [t.clone() for t in xs]
    bad_xs[0].view(-1)[0] = NAN
    outcome({"xs"}, lambda: prec.quad(bad_xs))
    vbad = flatten(grads).clone()
    vbad[0] = NAN
    outcome({"v"}, lambda: prec.precondition(vbad))
    twin = build()
    twin.load_state_dict(prec.state_dict())
    assert torch.equal(flatten(twin.solve(grads)), flatten(xs))


test_preconditioner, test_preconditioner_slow = properties(
    _preconditioner,
    data=st.data(),
    dtype=DTYPES,
    kind=st.sampled_from(["kfac", "diag"]),
    rows=st.sampled_from([0, 1, 4]),
)
