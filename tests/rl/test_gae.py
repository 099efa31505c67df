"""GAE against a plain per-env Python loop, and its truncation/termination handling."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad.rl.rollout.gae import gae


def reference_gae(r, v, nv, term, done, gamma, lam):
    T, N = r.shape
    adv = np.zeros((T, N))
    for i in range(N):
        running = 0.0
        for t in reversed(range(T)):
            delta = r[t, i] + gamma * (0.0 if term[t, i] else nv[t, i]) - v[t, i]
            running = delta + (0.0 if done[t, i] else gamma * lam * running)
            adv[t, i] = running
    return adv, adv + v


@given(
    T=st.integers(1, 12),
    N=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_matches_per_env_loop(T, N, seed, gamma, lam):
    rng = np.random.default_rng(seed)
    r, v, nv = (rng.standard_normal((T, N)) for _ in range(3))
    term = rng.random((T, N)) < 0.2
    done = term | (rng.random((T, N)) < 0.2)
    adv, ret = gae(
        torch.from_numpy(r),
        torch.from_numpy(v),
        torch.from_numpy(nv),
        torch.from_numpy(term),
        torch.from_numpy(done),
        gamma,
        lam,
    )
    ref_adv, ref_ret = reference_gae(r, v, nv, term, done, gamma, lam)
    assert adv.dtype == torch.float64 and adv.shape == (T, N)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)


def test_truncation_bootstraps_and_termination_cuts():
    # two envs, one step each, same data: env 0 truncated, env 1 terminated
    r = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    v_final = torch.tensor([[10.0, 10.0]], dtype=torch.float64)  # V(final_obs)
    term = torch.tensor([[False, True]])
    done = torch.tensor([[True, True]])
    adv, ret = gae(r, v, v_final, term, done, gamma=0.9, lam=0.95)
    assert adv[0, 0].item() == pytest.approx(1.0 + 0.9 * 10.0 - 0.5)  # uses V(final_obs)
    assert adv[0, 1].item() == pytest.approx(1.0 - 0.5)  # terminal: no bootstrap
    torch.testing.assert_close(ret, adv + v)


def test_done_cuts_the_recursion_but_not_the_bootstrap():
    # T=2, truncation at t=0: A_0 must not see A_1 (next episode)
    r = torch.tensor([[1.0], [100.0]], dtype=torch.float64)
    v = torch.zeros(2, 1, dtype=torch.float64)
    nv = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    term = torch.zeros(2, 1, dtype=torch.bool)
    done = torch.tensor([[True], [False]])
    adv, _ = gae(r, v, nv, term, done, gamma=0.5, lam=1.0)
    assert adv[0, 0].item() == pytest.approx(1.0 + 0.5 * 2.0)
    assert adv[1, 0].item() == pytest.approx(100.0)


def test_accepts_numpy_and_1d():
    adv, ret = gae(
        np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3, bool), np.zeros(3, bool), 1.0, 1.0
    )
    torch.testing.assert_close(adv, torch.tensor([3.0, 2.0, 1.0], dtype=adv.dtype))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"lam": -0.1}, "lam=-0.1"),
        ({"gamma": "0.9"}, "gamma must be a float"),
    ],
)
def test_rejects_bad_gamma_lam(kwargs, match):
    x = torch.zeros(2, 2)
    args = {"gamma": 0.99, "lam": 0.95, **kwargs}
    with pytest.raises(ValueError, match=match):
        gae(x, x, x, x.bool(), x.bool(), **args)


def test_rejects_bad_shapes_and_masks():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="share one"):
        gae(x, x, torch.zeros(3, 3), x.bool(), x.bool(), 0.9, 0.9)
    with pytest.raises(ValueError, match="T > 0"):
        e = torch.zeros(0, 2)
        gae(e, e, e, e.bool(), e.bool(), 0.9, 0.9)
    term = torch.zeros(3, 2, dtype=torch.bool)
    term[1, 1] = True
    with pytest.raises(ValueError, match="terminated"):
        gae(x, x, x, term, torch.zeros(3, 2, dtype=torch.bool), 0.9, 0.9)
