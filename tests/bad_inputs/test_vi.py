"""Bad input to natgrad.vi: non-finite or non-PD Gaussians, bad step sizes, NaN log-joints.

References, in float64: ``torch.distributions.MultivariateNormal`` for densities; for a
Gaussian target ``f(z) = −½ (z − m)ᵀ A (z − m)`` the exact expectations ``E_q[∇f] = −A(μ − m)``
and ``E_q[∇²f] = −A``, hence the NG-VI update ``S' = (1 − ρ)S + ρA``, ``μ' = μ + ρ S'⁻¹ḡ`` and
the closed-form ELBO; one ``torch.optim.Adam`` step on that closed form for ``fit_adam``.
"""

from __future__ import annotations

import math

import torch
from hypothesis import event
from hypothesis import strategies as st

from bad_inputs.harness import (
    DTYPES,
    NAN,
    TOL,
    assert_finite,
    assert_matches,
    outcome,
    properties,
    special_tensor,
)
from natgrad.vi import (
    BayesianLinearRegression,
    BayesianLogisticRegression,
    DiagGaussianQ,
    FullGaussianQ,
    elbo,
    expected_derivatives,
    fit,
    fit_adam,
    ngvi_step,
    standard_points,
)

LOG_2PI = math.log(2 * math.pi)


def _spd(d: int, gen: torch.Generator) -> torch.Tensor:
    b = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return b @ b.T + 0.5 * torch.eye(d, dtype=torch.float64)


def _families(data, dtype, full):
    d = data.draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    loc64, lkind = special_tensor(data, (d,), ["nan", "+inf"])
    pkind = data.draw(
        st.sampled_from(["ok", "ok", "ok", "zero", "negative", "nan", "tiny", "asym"])
    )
    prec = _spd(d, gen) if full else torch.rand(d, generator=gen, dtype=torch.float64) + 0.1
    bad = {"loc"} if lkind != "clean" else set()
    if pkind in ("zero", "negative", "nan"):
        prec = prec.clone()
        prec.view(-1)[0] = {"zero": 0.0, "negative": -1.0, "nan": NAN}[pkind]
        bad.add("precision")
    if pkind == "tiny" and not full:
        prec = prec * 1e-320 if dtype == torch.float64 else prec * 1e-45
        bad.add("precision")
    if pkind == "asym" and full and d > 1:
        prec = prec.clone()
        prec[0, 1] += 1.0
        bad.add("precision")
    cls = FullGaussianQ if full else DiagGaussianQ
    q = outcome(bad, lambda: cls(loc64.to(dtype), prec.to(dtype)))
    if q is None:
        return
    s = q.precision.double() if full else torch.diag(q.precision.double())
    ref = torch.distributions.MultivariateNormal(q.loc.double(), precision_matrix=s)
    z64, zkind = special_tensor(data, (2, d), ["nan", "-inf"])
    lp = outcome({"z"} if zkind != "clean" else set(), lambda: q.log_prob(z64.to(dtype)))
    cond = float(torch.linalg.cond(s))
    if lp is not None:
        scale = (z64.to(dtype).double() - q.loc.double()).square().sum(-1) * float(
            s.abs().max()
        ) + 10
        assert_matches(lp, ref.log_prob(z64.to(dtype).double()), dtype, scale=scale * cond)
    assert_matches(q.entropy(), ref.entropy(), dtype, scale=10 * cond)
    back = cls.from_natural(*q.natural_params())
    assert_matches(back.loc, q.loc.double(), dtype, scale=cond * (1 + q.loc.double().abs().max()))
    assert_matches(back.precision, q.precision.double(), dtype, scale=cond * float(s.abs().max()))
    var = data.draw(st.sampled_from([1.0, 0.0, -2.0, NAN]))
    vbad = {"variance", "covariance"} if var <= 0 or math.isnan(var) else set()
    if full:
        cov = torch.eye(d, dtype=dtype) * var
        made = outcome(vbad, lambda: FullGaussianQ.from_covariance(q.loc, cov))
    else:
        made = outcome(
            vbad, lambda: DiagGaussianQ.from_variance(q.loc, torch.full((d,), var, dtype=dtype))
        )
    if made is not None:
        assert_matches(made.precision, torch.eye(d) if full else torch.ones(d), dtype)
    m_back = cls.from_mean_params(*q.mean_params())
    assert_matches(m_back.loc, q.loc.double(), dtype, scale=cond * (1 + q.loc.double().abs().max()))
    if full:
        tril = torch.linalg.cholesky(torch.linalg.inv(s)).to(dtype)
        if data.draw(st.booleans()):
            tril = tril.clone()
            tril[0, 0] = -1.0
            outcome({"scale_tril"}, lambda: FullGaussianQ.from_scale_tril(q.loc, tril))
        else:
            made = FullGaussianQ.from_scale_tril(q.loc, tril)
            assert_matches(made.precision, s, dtype, scale=cond * float(s.abs().max()))
    assert_finite(q.sample((3,), generator=gen))


test_families, test_families_slow = properties(
    _families, data=st.data(), dtype=DTYPES, full=st.booleans()
)


class Target:
    """``f(z) = −½ (z − m)ᵀ A (z − m)`` and a starting ``q``."""

    def __init__(self, data, dtype, full, clean=False):
        self.d = data.draw(st.integers(1, 3))
        gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
        self.a = _spd(self.d, gen)
        self.m = torch.randn(self.d, generator=gen, dtype=torch.float64)
        self.kind = "ok" if clean else data.draw(st.sampled_from(["ok", "nan", "shape"]))
        a, m = self.a.to(dtype), self.m.to(dtype)
        self.dtype = dtype

        def f(z):
            r = z - m
            out = -0.5 * ((r @ a) * r).sum(-1)
            if self.kind == "nan":
                return out * NAN
            return out.sum() if self.kind == "shape" else out

        self.f = f
        loc = torch.randn(self.d, generator=gen, dtype=torch.float64).to(dtype)
        prec = _spd(self.d, gen).to(dtype)
        self.q = FullGaussianQ(loc, prec) if full else DiagGaussianQ(loc, prec.diagonal())

    def expected(self):
        """Exact ``E_q[∇f]`` and ``E_q[∇²f]`` (the Hessian's diagonal for a diagonal q)."""
        mu = self.q.loc.double()
        grad = -self.a @ (mu - self.m)
        hess = -self.a if isinstance(self.q, FullGaussianQ) else -self.a.diagonal()
        return grad, hess

    def elbo(self):
        mu, cov = self.q.loc.double(), self.q.covariance.double()
        r = mu - self.m
        ent = 0.5 * self.d * (1 + LOG_2PI) + 0.5 * torch.logdet(cov)
        return -0.5 * (self.a * cov).sum() - 0.5 * r @ self.a @ r + ent


def _adam_reference(t: Target, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``torch.optim.Adam`` step on the closed-form ELBO, in fit_adam's coordinates
    (``μ`` and ``log σ``, or a Cholesky factor of Σ with a log diagonal)."""
    loc = t.q.loc.double().clone().requires_grad_(True)
    full = isinstance(t.q, FullGaussianQ)
    if full:
        c0 = torch.linalg.cholesky(t.q.covariance.double())
        raw = (torch.tril(c0, -1) + torch.diag(c0.diagonal().log())).requires_grad_(True)
    else:
        raw = t.q.variance.double().sqrt().log().clone().requires_grad_(True)
    opt = torch.optim.Adam([loc, raw], lr=lr)

    def cov_of(r):
        if not full:
            return torch.diag(torch.exp(2 * r))
        c = torch.tril(r, -1) + torch.diag(r.diagonal().exp())
        return c @ c.T

    r = loc - t.m
    logdet = 2 * (raw.diagonal() if full else raw).sum()
    objective = -0.5 * (t.a * cov_of(raw)).sum() - 0.5 * r @ t.a @ r + 0.5 * logdet
    (-objective).backward()
    opt.step()
    return loc.detach(), cov_of(raw.detach())


def _inference(data, dtype, full):
    clean = data.draw(st.booleans())  # half the draws: every argument good
    t = Target(data, dtype, full, clean)
    entry = data.draw(st.sampled_from(["ngvi_step", "fit", "elbo", "expected", "points", "adam"]))
    pick = lambda good, bad: data.draw(st.sampled_from(good if clean else good + bad))  # noqa: E731
    rho = pick([1.0, 0.5], [0.0, 1.5, NAN, True])
    n_samples = pick([None, 2], [0, -1, True, 2.5])
    steps = pick([1, 2], [0, -1, True])
    lr = pick([0.05], [1e300, 0.0, NAN])
    bad = set()
    if isinstance(rho, bool) or not 0 < rho <= 1:
        bad.add("step_size")
    if n_samples is not None and (
        isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1
    ):
        bad.add("n_samples")
    if isinstance(steps, bool) or steps < 0:
        bad.add("steps")
    if t.kind == "shape":
        bad.add("log_joint")
    calls = {
        "ngvi_step": (
            lambda: ngvi_step(t.f, t.q, step_size=rho, n_samples=n_samples),
            {"step_size", "n_samples", "log_joint"},
        ),
        "fit": (lambda: fit(t.f, t.q, steps=steps, step_size=rho, n_samples=n_samples), bad),
        "elbo": (lambda: elbo(t.f, t.q, n_samples=n_samples), {"n_samples", "log_joint"}),
        "expected": (
            lambda: expected_derivatives(t.f, t.q, n_samples=n_samples),
            {"n_samples", "log_joint"},
        ),
        "points": (lambda: standard_points(t.d, n_samples, dtype=dtype), {"n_samples"}),
        "adam": (
            lambda: fit_adam(t.f, t.q, steps=steps, lr=lr, n_samples=n_samples),
            {"steps", "n_samples", "log_joint", "lr"},
        ),
    }
    call, relevant = calls[entry]
    if entry == "adam" and not 0 < lr <= torch.finfo(dtype).max:
        bad.add("lr")  # also a finite lr that the dtype cannot hold
    if entry == "elbo" and t.kind == "nan":
        bad.add("log_joint")
    if entry in ("fit", "adam") and steps == 0:
        bad.discard("log_joint")  # no step: the log-joint is never evaluated
    out = outcome(bad & relevant, call)
    if out is None:
        return
    tol = TOL[dtype] * 1e3
    if entry == "points":
        assert_finite(out)
        return
    grad, hess = t.expected()
    if entry == "expected":
        if out.finite and n_samples is None:
            assert torch.allclose(
                out.grad.double(), grad, rtol=tol, atol=tol * (1 + grad.abs().max())
            )
            assert torch.allclose(
                out.hess.double(), hess, rtol=tol, atol=tol * (1 + hess.abs().max())
            )
        assert out.finite == (t.kind == "ok")
        return
    if entry == "elbo":
        if n_samples is None:
            assert_matches(out, t.elbo(), dtype, scale=100 * float(t.elbo().abs()) + 100)
        return
    if entry == "adam":
        q, history = out
        assert len(history) <= steps and all(math.isfinite(h.elbo) for h in history if h.ok)
        assert_finite(q.loc, q.precision)
        if history and not history[-1].ok and "after step" in history[-1].message:
            # a step that left no proper Gaussian (exp(log σ) over- or underflowed) is undone
            event("fit_adam: step undone")
            assert torch.equal(q.loc, t.q.loc)
            return
        if steps == 1 and n_samples is None and t.kind == "ok":
            event("fit_adam compared with torch.optim.Adam")
            loc, cov = _adam_reference(t, lr)
            assert torch.allclose(q.loc.double(), loc, rtol=tol, atol=tol)
            assert torch.allclose(q.covariance.double(), cov, rtol=tol, atol=tol)
        return
    q, info = (out[0], out[1][-1] if out[1] else None) if entry == "fit" else out
    assert_finite(q.loc, q.precision)
    if info is None or not info.ok:
        assert t.kind == "nan" or info is None
        return
    if n_samples is not None or entry == "fit" and steps != 1:
        return
    event(f"{entry} compared with the exact NG-VI update")
    s = t.q.precision.double()
    s_new = (1 - rho) * s - rho * hess
    mu_new = t.q.loc.double() + rho * (
        torch.linalg.solve(s_new, grad) if s.dim() == 2 else grad / s_new
    )
    assert torch.allclose(
        q.precision.double(), s_new, rtol=tol, atol=tol * float(s_new.abs().max())
    )
    assert torch.allclose(
        q.loc.double(), mu_new, rtol=tol, atol=tol * (1 + float(mu_new.abs().max()))
    )


test_inference, test_inference_slow = properties(
    _inference, data=st.data(), dtype=DTYPES, full=st.booleans()
)


def _models(data, dtype):
    n = data.draw(st.sampled_from([0, 1, 4]))
    x64, xkind = special_tensor(data, (n, 2), ["nan", "+inf"])
    y64, ykind = special_tensor(data, (n,), ["nan"])
    noise, prior = (
        data.draw(st.sampled_from([0.5, 0.5, 0.0, -1.0, NAN])),
        data.draw(st.sampled_from([1.0, 1.0, 0.0, NAN])),
    )
    bad = set()
    if n == 0 or xkind != "clean":
        bad.add("X")
    if ykind != "clean" and n:
        bad |= {"X and y", "y"}
    for name, v in (("noise_var", noise), ("prior_var", prior)):
        if not v > 0:
            bad.add(name)
    X, y = x64.to(dtype), y64.to(dtype)
    model = outcome(bad, lambda: BayesianLinearRegression(X, y, noise_var=noise, prior_var=prior))
    if model is not None:
        X64, y64c = X.double(), y.double()
        prec = X64.T @ X64 / noise + torch.eye(2, dtype=torch.float64) / prior
        mean = torch.linalg.solve(prec, X64.T @ y64c / noise)
        post = model.posterior()
        assert_matches(post.loc, mean, dtype, scale=10 * float(torch.linalg.cond(prec)))
        cov = prior * X64 @ X64.T + noise * torch.eye(n, dtype=torch.float64)
        ref = torch.distributions.MultivariateNormal(
            torch.zeros(n, dtype=torch.float64), cov
        ).log_prob(y64c)
        assert_matches(model.log_evidence(), ref, dtype, scale=10 * (1 + float(ref.abs())))
        kl = model.kl_to_posterior(post)
        assert_matches(kl, torch.zeros(()), dtype, scale=10 * float(torch.linalg.cond(prec)))
    labels = (y64 > 0).to(dtype) if data.draw(st.booleans()) else y64.to(dtype)
    lbad = {"X"} if (n == 0 or xkind != "clean") else set()
    if n and not bool(((labels == 0) | (labels == 1)).all()):
        lbad |= {"y", "X and y"}
    if not prior > 0:
        lbad.add("prior_var")
    logistic = outcome(lbad, lambda: BayesianLogisticRegression(X, labels, prior_var=prior))
    if logistic is None:
        return
    q = FullGaussianQ(torch.zeros(2, dtype=dtype), torch.eye(2, dtype=dtype))
    k = data.draw(st.sampled_from([None, 5, 0, -1, True]))
    kbad = (
        set()
        if k is None or (isinstance(k, int) and not isinstance(k, bool) and k > 0)
        else {"n_samples"}
    )
    prob = outcome(
        kbad,
        lambda: logistic.predict_proba(
            q, X, n_samples=k, generator=torch.Generator().manual_seed(0)
        ),
    )
    if prob is not None and k is None:
        assert_matches(prob, torch.sigmoid(X.double() @ q.loc.double()), dtype)
    elif prob is not None:
        assert ((prob >= 0) & (prob <= 1)).all()


test_models, test_models_slow = properties(_models, data=st.data(), dtype=DTYPES)
