import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad.linalg import cg, solve_dense


def spd(n, cond, seed):
    """A random SPD matrix with a known condition number."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(float(cond))), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


@given(n=st.integers(1, 30), cond=st.sampled_from([1.0, 10.0, 1e3]), seed=st.integers(0, 999))
def test_cg_matches_linalg_solve(n, cond, seed):
    a = spd(n, cond, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    r = cg(lambda v: a @ v, b, max_iter=10 * n, rtol=1e-12)
    assert r.converged and not r.breakdown
    assert torch.allclose(r.x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    assert r.status == "converged"
    assert torch.allclose(r.residual, b - a @ r.x, atol=1e-8)


def test_cg_reports_breakdown_on_indefinite():
    a = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    r = cg(lambda v: a @ v, b)
    assert r.breakdown and not r.converged and r.status == "breakdown"
    assert torch.isfinite(r.x).all()


def test_cg_reports_non_convergence():
    a = spd(20, 1e4, 0)
    r = cg(lambda v: a @ v, torch.ones(20, dtype=torch.float64), max_iter=3)
    assert r.iterations == 3 and not r.converged and not r.breakdown
    assert r.status == "max_iter"
    assert r.residual_norm == pytest.approx(
        float((torch.ones(20, dtype=torch.float64) - a @ r.x).norm())
    )


def test_preconditioner_helps():
    a = spd(40, 1e5, 1)
    b = torch.ones(40, dtype=torch.float64)
    plain = cg(lambda v: a @ v, b, max_iter=200, rtol=1e-10)
    inv = torch.linalg.inv(a)
    pre = cg(lambda v: a @ v, b, max_iter=200, rtol=1e-10, preconditioner=lambda r: inv @ r)
    assert pre.converged and pre.iterations <= 2 < plain.iterations


def test_zero_rhs_and_x0():
    a = spd(5, 10, 2)
    r = cg(lambda v: a @ v, torch.zeros(5, dtype=torch.float64))
    assert r.converged and r.iterations == 0
    x = torch.linalg.solve(a, torch.ones(5, dtype=torch.float64))
    r = cg(lambda v: a @ v, torch.ones(5, dtype=torch.float64), x0=x)
    assert r.iterations <= 1


def test_solve_dense_is_the_seed_formula():
    a = spd(6, 100, 3)
    g = torch.randn(6, dtype=torch.float64)
    assert torch.allclose(solve_dense(a, g), torch.linalg.inv(a) @ g)
    assert torch.allclose(
        solve_dense(a, g, damping=0.5),
        torch.linalg.solve(a + 0.5 * torch.eye(6, dtype=torch.float64), g),
    )
    indefinite = torch.diag(torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert torch.allclose(
        solve_dense(indefinite, torch.ones(2, dtype=torch.float64)),
        torch.tensor([1.0, -0.5], dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(b=torch.ones(2, 1)), "1-d tensor"),
        (dict(b=torch.tensor([1.0, float("nan")])), "NaN or inf"),
        (dict(b=torch.ones(2), max_iter=-1), "max_iter"),
        (dict(b=torch.ones(2), rtol=-1.0), "rtol"),
        (dict(b=torch.ones(2), x0=torch.ones(3)), "x0 has shape"),
    ],
)
def test_cg_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cg(lambda v: v, **kwargs)


def test_solve_dense_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        solve_dense(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="length"):
        solve_dense(torch.eye(2), torch.zeros(3))
    with pytest.raises(ValueError, match="damping"):
        solve_dense(torch.eye(2), torch.zeros(2), damping=-1.0)
