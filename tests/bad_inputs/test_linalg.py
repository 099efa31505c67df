"""Bad input to natgrad.linalg: NaN right-hand sides, bad tolerances, damping and max_kl.

References: ``torch.linalg`` in float64 for the solves; the defining properties of a
trust-region step (measured KL within the radius, loss improved, or parameters restored
bit for bit) and ``β = sqrt(2δ / xᵀFx)`` computed here from the dense Fisher.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from bad_inputs.harness import (
    DTYPES,
    INF,
    NAN,
    TOL,
    assert_finite,
    outcome,
    properties,
    special_tensor,
)
from bad_inputs.test_fisher import DAMPINGS, damping_bad
from natgrad.distributions import DiagGaussian
from natgrad.linalg import (
    cg,
    line_search,
    natural_direction,
    natural_step,
    scaled_direction,
    solve_dense,
    trust_region_step,
)
from natgrad.params import flatten

TOLS = [1e-10, 0.0, 1e-3, -1.0, NAN, INF, True]
MAX_KLS = [1e-3, 1e-3, 0.1, 0.1, 1e300, NAN, 0.0, -1.0, INF, True]


def _tol_bad(value) -> bool:
    return isinstance(value, bool) or not 0 <= value < INF


def _matrix(data, n: int) -> tuple[torch.Tensor, str]:
    kind = data.draw(st.sampled_from(["spd", "spd", "indefinite", "singular", "zero"]))
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    eig = {
        "spd": torch.logspace(0, data.draw(st.sampled_from([0, 3])), n, dtype=torch.float64),
        "indefinite": torch.linspace(-1.0, 2.0, n, dtype=torch.float64),
        "singular": torch.cat([torch.ones(max(n - 1, 1)), torch.zeros(1)])[:n].double(),
        "zero": torch.zeros(n, dtype=torch.float64),
    }[kind]
    return q @ torch.diag(eig) @ q.T, kind


def _cg(data, dtype):
    n = data.draw(st.integers(1, 5))
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    a, kind = _matrix(data, n)
    b64, bkind = special_tensor(data, (n,), ["nan", "+inf"])
    use_x0 = data.draw(st.sampled_from([False, False, True]))
    x064, xkind = special_tensor(data, (n,), ["nan"]) if use_x0 else (None, "clean")
    max_iter = data.draw(st.sampled_from([None, 0, 3, 50, -1, True, 2.5]))
    rtol, atol = (
        data.draw(st.sampled_from(TOLS)),
        data.draw(st.sampled_from(TOLS[:3] + [-1.0, NAN])),
    )
    pre = data.draw(st.sampled_from([None, "identity", "negative"]))
    bad = set()
    if bkind != "clean":
        bad.add("b")
    if xkind != "clean":
        bad.add("x0")
    if max_iter is not None and (
        isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0
    ):
        bad.add("max_iter")
    if _tol_bad(rtol):
        bad.add("rtol")
    if _tol_bad(atol):
        bad.add("atol")
    a_t, b = a.to(dtype), b64.to(dtype)
    x0 = None if x064 is None else x064.to(dtype)
    precond = {None: None, "identity": lambda r: r.clone(), "negative": lambda r: -r}[pre]
    res = outcome(
        bad,
        lambda: cg(
            lambda v: a_t @ v,
            b,
            x0=x0,
            max_iter=max_iter,
            rtol=rtol,
            atol=atol,
            preconditioner=precond,
        ),
    )
    if res is None:
        return
    assert_finite(res.x, res.residual_norm)
    assert res.iterations <= (n if max_iter is None else max_iter)
    norm_a = float(torch.linalg.matrix_norm(a, 2))
    true_res = float((b.double() - a @ res.x.double()).norm())
    slack = (
        100
        * torch.finfo(dtype).eps
        * (norm_a * float(res.x.double().norm()) + float(b.double().norm()))
    )
    if res.converged:
        assert true_res <= max(rtol * float(b.double().norm()), atol) * 1.01 + slack
    if res.status == "max_iter" and kind == "spd":
        eps = torch.finfo(dtype).eps
        assert eps * norm_a * float(res.x.double().norm()) <= 1.01 * float(b.double().norm()) + 1.0
    if pre == "negative" and max_iter != 0 and not res.converged:
        assert res.breakdown and res.iterations == 0  # rᵀM⁻¹r < 0 at the start


test_cg, test_cg_slow = properties(_cg, data=st.data(), dtype=DTYPES)


def _solve_dense(data, dtype):
    n = data.draw(st.integers(1, 4))
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    a, kind = _matrix(data, n)
    mkind = data.draw(st.sampled_from(["clean", "clean", "nan", "nonsquare"]))
    b64, bkind = special_tensor(data, (n,), ["nan", "-inf"])
    damping = data.draw(st.sampled_from(DAMPINGS))
    bad = set()
    if mkind == "nan":
        a[0, 0] = NAN
        bad.add("matrix")
    if mkind == "nonsquare":
        a = torch.cat([a, a[:1]])
        bad.add("matrix")
    if bkind != "clean":
        bad.add("b")
    if damping_bad(damping, dtype):
        bad.add("damping")
    lam = 0.0 if "damping" in bad else float(damping)
    if not bad:
        damped = a + lam * torch.eye(n, dtype=torch.float64)
        cond = torch.linalg.cond(damped.to(dtype).double())
        if not bool(cond < 0.01 / torch.finfo(dtype).eps):
            bad.add("matrix")  # numerically singular: refused, or it is solved; see below
    x = None
    if bad == {"matrix"} and mkind == "clean":
        try:  # a near-singular matrix may be factorised; then the residual must still be small
            x = solve_dense(a.to(dtype), b64.to(dtype), damping=damping)
        except ValueError as err:
            assert "matrix" in str(err)
            return
    else:
        x = outcome(bad, lambda: solve_dense(a.to(dtype), b64.to(dtype), damping=damping))
    if x is None:
        return
    assert_finite(x)
    damped = a.to(dtype).double() + lam * torch.eye(n, dtype=torch.float64)
    resid = float((damped @ x.double() - b64.to(dtype).double()).norm())
    norm_a = float(torch.linalg.matrix_norm(damped, 2))
    scale = norm_a * float(x.double().norm()) + float(b64.norm())
    # x is a multiple of the smallest subnormal: where the true x underflows (huge damping,
    # tiny b) the residual cannot drop below ‖A‖·tiny·√n
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    assert resid <= 1e3 * TOL[dtype] * scale + norm_a * tiny * n**0.5


test_solve_dense, test_solve_dense_slow = properties(_solve_dense, data=st.data(), dtype=DTYPES)


class Step:
    """A one-parameter-vector Gaussian policy ``N(w·x, σ)`` with a surrogate loss."""

    def __init__(self, dtype):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 2, generator=g, dtype=torch.float64).to(dtype)
        self.w = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=dtype))
        self.ls = torch.nn.Parameter(torch.tensor([-0.5], dtype=dtype))
        self.params = [self.w, self.ls]
        self.old = self.dist().detach()
        self.actions = self.old.sample(g)
        self.adv = torch.randn(12, generator=g, dtype=torch.float64).to(dtype)
        self.old_lp = self.old.log_prob(self.actions)

    def dist(self):
        return DiagGaussian((self.x @ self.w).unsqueeze(-1), self.ls)

    def loss(self):
        return -(torch.exp(self.dist().log_prob(self.actions) - self.old_lp) * self.adv).mean()

    def kl(self):
        return self.old.kl(self.dist()).mean()

    def fisher(self) -> torch.Tensor:
        """Dense Fisher in (w, log σ): E[x xᵀ]/σ² and 2, float64."""
        x, s2 = self.x.double(), math.exp(2 * float(self.ls.detach()))
        f = torch.zeros(3, 3, dtype=torch.float64)
        f[:2, :2] = x.T @ x / len(x) / s2
        f[2, 2] = 2.0
        return f


def _steps(data, dtype):
    prob = Step(dtype)
    entry = data.draw(
        st.sampled_from(["trust_region", "natural_step", "line_search", "direction", "scaled"])
    )
    max_kl = data.draw(st.sampled_from(MAX_KLS))
    g64, gkind = special_tensor(data, (3,), ["nan", "+inf"])
    grad = flatten(torch.autograd.grad(prob.loss(), prob.params)).detach()
    if gkind != "clean":
        grad = g64.to(dtype)
    ratio = data.draw(st.sampled_from([0.8, 0.8, 0.0, 1.0, NAN]))
    lam = data.draw(st.sampled_from([0.0, 1e-3, 1.0]))
    f = prob.fisher() + lam * torch.eye(3, dtype=torch.float64)
    f_t = f.to(dtype)

    def mv(v):
        return f_t @ v

    bad = set()
    if isinstance(max_kl, bool) or not 0 < max_kl < INF:
        bad.add("max_kl")
    if gkind != "clean":
        bad |= {"grad", "b"}
    if entry in ("trust_region", "line_search") and not 0 < ratio < 1:
        bad.add("backtrack_ratio")
    before = [p.detach().clone() for p in prob.params]
    good_dir = natural_direction(mv, flatten(before).new_ones(3), 0.01)
    calls = {
        "trust_region": lambda: trust_region_step(
            prob.params,
            grad,
            mv,
            prob.loss,
            prob.kl,
            max_kl=max_kl,
            backtrack_ratio=ratio,
            cg_iters=20,
        ),
        "natural_step": lambda: natural_step(
            prob.params, grad, mv, max_kl=max_kl, kl_fn=prob.kl, loss_fn=prob.loss, cg_iters=20
        ),
        "line_search": lambda: line_search(
            prob.params,
            natural_direction(mv, grad, 0.01, cg_iters=20) if gkind == "clean" else good_dir,
            prob.loss,
            prob.kl,
            max_kl=max_kl,
            backtrack_ratio=ratio,
        ),
        "direction": lambda: natural_direction(mv, grad, max_kl, cg_iters=20),
        "scaled": lambda: scaled_direction(
            grad, float(grad.double() @ f @ grad.double()), grad, max_kl
        ),
    }
    if entry == "line_search":
        bad.discard("grad")
        bad.discard("b")
    if entry == "scaled":
        bad.discard("b")
    out = outcome(bad, calls[entry])
    if out is None:
        assert all(torch.equal(p, q) for p, q in zip(prob.params, before))
        return
    if entry in ("direction", "scaled"):
        x = out.x.double()
        if out.usable:
            xfx = float(x @ f @ x)
            assert math.isclose(
                out.step_size, math.sqrt(2 * max_kl / xfx), rel_tol=1e3 * TOL[dtype]
            )
            if entry == "direction" and out.cg.converged:
                expected = torch.linalg.solve(f, grad.double())
                assert torch.allclose(x, expected, rtol=1e3 * TOL[dtype], atol=1e3 * TOL[dtype])
        return
    after = [p.detach().clone() for p in prob.params]
    assert all(torch.isfinite(p).all() for p in after)
    if not out.accepted:
        assert all(torch.equal(p, q) for p, q in zip(after, before))
        return
    assert_finite(out.kl, out.loss_after, out.step_size)
    assert out.kl == float(prob.kl().detach()) and out.loss_after == float(prob.loss().detach())
    if entry != "natural_step":
        assert out.kl <= max_kl and out.loss_after < out.loss_before


test_steps, test_steps_slow = properties(_steps, data=st.data(), dtype=DTYPES)
