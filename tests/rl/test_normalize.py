"""Running statistics (parallel merge), observation normaliser and reward scaler."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natgrad.rl.rollout.normalize import ObsNormalizer, RewardScaler, RunningMeanStd


@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 3),
)
def test_merge_equals_stats_of_concatenation(sizes, seed, dim):
    rng = np.random.default_rng(seed)
    chunks = [rng.normal(3.0, 2.0, size=(n, dim)) for n in sizes]
    rms = RunningMeanStd((dim,))
    for c in chunks:
        part = RunningMeanStd((dim,))
        part.update(c)
        rms.merge(part.count, part.mean, part.M2)  # merge of separately computed stats
    data = np.concatenate(chunks)
    assert rms.count == len(data)
    if len(data):
        np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_array_equal(rms.var, np.ones(dim))


def test_update_flattens_leading_dims_and_validates():
    rms = RunningMeanStd((2,))
    x = np.arange(24, dtype=float).reshape(3, 4, 2)
    rms.update(x)
    np.testing.assert_allclose(rms.mean, x.reshape(-1, 2).mean(0))
    with pytest.raises(ValueError, match="trailing dims"):
        rms.update(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="count=-1"):
        rms.merge(-1, np.zeros(2), np.zeros(2))


def test_obs_normalizer_is_frozen_between_updates_and_clips():
    norm = ObsNormalizer((2,), clip=10.0, eps=1e-8)
    x = np.array([[1.0, -2.0]])
    np.testing.assert_allclose(norm.normalize(x), x / np.sqrt(1 + 1e-8))  # identity-ish
    norm.update(np.array([[0.0, 0.0], [2.0, 0.0]]))  # mean (1, 0), var (1, 0)
    before = norm.state_dict()
    y = norm.normalize(np.array([[3.0, 1.0]]))
    np.testing.assert_allclose(y, [[2.0 / np.sqrt(1 + 1e-8), 10.0]])  # second dim clipped
    assert norm.state_dict()["count"] == before["count"]  # normalize never updates
    out = np.empty((1, 2), dtype=np.float32)
    norm.normalize(np.array([[3.0, 1.0]]), out=out)
    np.testing.assert_allclose(out, y.astype(np.float32))


def test_obs_normalizer_state_roundtrip():
    a = ObsNormalizer((3,), clip=5.0)
    a.update(np.random.default_rng(0).normal(size=(50, 3)))
    b = ObsNormalizer((3,))
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_array_equal(a.normalize(x), b.normalize(x))
    assert b.clip == 5.0
    with pytest.raises(ValueError, match="shape"):
        ObsNormalizer((2,)).load_state_dict(a.state_dict())


def test_reward_scaler_accumulates_per_env_and_scales_with_frozen_std():
    sc = RewardScaler(gamma=0.5)
    ret = np.zeros(2)
    out1 = sc.accumulate(ret, np.array([1.0, 2.0]), np.array([False, True]))
    np.testing.assert_allclose(out1, [1.0, 2.0])
    np.testing.assert_allclose(ret, [1.0, 0.0])  # env 1 ended: accumulator reset
    out2 = sc.accumulate(ret, np.array([1.0, 1.0]), np.array([False, False]))
    np.testing.assert_allclose(out2, [1.5, 1.0])
    np.testing.assert_allclose(sc.scale(np.array([3.0])), [3.0 / np.sqrt(1 + 1e-8)])
    sc.update(np.stack([out1, out2]))
    std = np.sqrt(np.var([1.0, 2.0, 1.5, 1.0]) + 1e-8)
    np.testing.assert_allclose(sc.scale(np.array([3.0])), [3.0 / std])
    other = RewardScaler(gamma=0.9)
    other.load_state_dict(sc.state_dict())
    assert other.gamma == 0.5 and other.scale(np.array([1.0]))[0] == sc.scale(np.array([1.0]))[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="gamma=2"):
        RewardScaler(gamma=2)
    with pytest.raises(ValueError, match="clip=0"):
        ObsNormalizer((1,), clip=0)
