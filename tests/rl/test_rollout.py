"""Samplers and the local collector: determinism, grouping independence, bit-exact
resume, batch semantics and error reporting."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from natgrad.rl.envs import EnvFactory
from natgrad.rl.policies.sampler import NumpyMLPSampler, TorchSampler, _categorical
from natgrad.rl.rollout import Collector, LocalCollector, RolloutBatch, concat_batches
from natgrad.rl.rollout.gae import compute_next_values


def mlp(din, dout, seed=0, act=nn.Tanh):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(din, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, dout))


def assert_batches_equal(a: RolloutBatch, b: RolloutBatch):
    for name in RolloutBatch.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "episodes" or x is None:
            assert x == y, name
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


class EchoEnv(gym.Env):
    """Observation = the (flattened) action the env received; 5-step episodes."""

    def __init__(self, act_space=None, nan_at=-1, nan_reward=False):
        self.action_space = act_space or spaces.Box(-1.0, 1.0, (2,), np.float32)
        dim = int(np.prod(self.action_space.shape)) or 1
        self.observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float64)
        self.nan_at, self.nan_reward, self.t = nan_at, nan_reward, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(self.observation_space.shape), {}

    def step(self, action):
        self.t += 1
        obs = np.asarray(action, dtype=np.float64).reshape(-1).copy()
        rew = 1.0
        if self.t == self.nan_at:
            rew, obs[0] = (np.nan, obs[0]) if self.nan_reward else (1.0, np.inf)
        return obs, rew, False, self.t % 5 == 0, {}


# ----------------------------------------------------------------------------- samplers


def test_gaussian_sampler_matches_torch_and_noise_formula():
    actor = mlp(3, 2)
    log_std = np.array([-0.5, 0.3])
    s = NumpyMLPSampler(actor, "gaussian", log_std=log_std)
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal((5, 2))
    with torch.no_grad():
        mean = actor(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(s.params(obs), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.sample(obs, noise), mean + np.exp(log_std) * noise, atol=1e-5)
    np.testing.assert_array_equal(s.mode(obs), s.params(obs))
    assert (s.noise_kind, s.noise_shape, s.action_shape) == ("normal", (2,), (2,))
    t = TorchSampler(actor, "gaussian", 2, log_std=torch.tensor(log_std))
    np.testing.assert_allclose(t.sample(obs, noise), s.sample(obs, noise), atol=1e-5)
    pair = TorchSampler(lambda x: (actor(x), torch.tensor(log_std)), "gaussian", 2)
    np.testing.assert_allclose(pair.sample(obs, noise), s.sample(obs, noise), atol=1e-5)


def test_categorical_inverse_cdf():
    logits = np.log(np.array([[0.2, 0.5, 0.3]], dtype=np.float32))
    u = np.array([0.0, 0.19, 0.21, 0.69, 0.71, 0.999999])
    got = _categorical(np.repeat(logits, len(u), 0), u)
    np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 2])
    s = NumpyMLPSampler(mlp(2, 4, act=nn.ReLU), "categorical")
    obs = np.tile(np.array([[0.3, -1.0]], np.float32), (20000, 1))
    u = np.random.default_rng(0).random((20000, 1))
    freq = np.bincount(s.sample(obs, u), minlength=4) / 20000
    p = torch.softmax(torch.from_numpy(s.params(obs[:1])), 1).numpy()[0]
    np.testing.assert_allclose(freq, p, atol=0.015)
    assert s.mode(obs[:1])[0] == p.argmax()


def test_multicategorical_and_bernoulli():
    s = NumpyMLPSampler(mlp(2, 5), "multicategorical", nvec=[2, 3])
    obs = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    u = np.random.default_rng(1).random((7, 2))
    a = s.sample(obs, u)
    out = s.params(obs)
    np.testing.assert_array_equal(a[:, 0], _categorical(out[:, :2], u[:, 0]))
    np.testing.assert_array_equal(a[:, 1], _categorical(out[:, 2:], u[:, 1]))
    assert s.mode(obs).shape == (7, 2)
    b = NumpyMLPSampler(mlp(2, 3), "bernoulli")
    u = np.random.default_rng(2).random((7, 3))
    np.testing.assert_array_equal(b.sample(obs, u), u < 1 / (1 + np.exp(-b.params(obs))))
    with pytest.raises(ValueError, match="sums to 4"):
        NumpyMLPSampler(mlp(2, 5), "multicategorical", nvec=[2, 2])


def test_numpy_sampler_rows_are_independent_of_batch_size():
    s = NumpyMLPSampler(mlp(11, 3), "gaussian", log_std=np.zeros(3))
    x = np.random.default_rng(0).standard_normal((37, 11)).astype(np.float32)
    full = s.params(x)
    for i in range(37):  # bitwise: BLAS would not guarantee this
        assert np.array_equal(s.params(x[i : i + 1])[0], full[i])
    assert np.array_equal(s.params(x[5:13]), full[5:13])


def test_sampler_pickles_and_rejects_bad_actors():
    s = NumpyMLPSampler(mlp(3, 2), "gaussian", log_std=np.zeros(2))
    s2 = pickle.loads(pickle.dumps(s))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(s.params(x), s2.params(x))
    with pytest.raises(ValueError, match="not a plain MLP"):
        NumpyMLPSampler(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()), "categorical")
    with pytest.raises(ValueError, match="log_std has shape"):
        NumpyMLPSampler(mlp(3, 2), "gaussian", log_std=np.zeros(3))
    with pytest.raises(ValueError, match="needs log_std"):
        NumpyMLPSampler(mlp(3, 2), "gaussian")
    with pytest.raises(ValueError, match="kind='beta'"):
        NumpyMLPSampler(mlp(3, 2), "beta")
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\)"):
        s.params(np.ones((2, 4), np.float32))


# ---------------------------------------------------------------------------- collector

CARTPOLE = EnvFactory("CartPole-v1", kwargs={"max_episode_steps": 40})
CP_SAMPLER = NumpyMLPSampler(mlp(4, 2), "categorical")


def cartpole(n, seed=0, **kw):
    return LocalCollector(CARTPOLE, n, seed, **kw)


def test_same_seed_same_batches_and_protocol():
    a, b = cartpole(3, normalize_obs=True), cartpole(3, normalize_obs=True)
    assert isinstance(a, Collector)
    for _ in range(2):
        assert_batches_equal(a.collect(CP_SAMPLER, 50), b.collect(CP_SAMPLER, 50))
    other = cartpole(3, seed=1).collect(CP_SAMPLER, 50)
    assert not np.array_equal(other.actions, a.collect(CP_SAMPLER, 50).actions)


def test_sync_and_async_give_identical_batches():
    kw = {"normalize_obs": True, "normalize_reward": True}
    sync = cartpole(4, **kw)
    with cartpole(4, vec="async", vec_kwargs={"n_workers": 2}, **kw) as asyn:
        for _ in range(2):
            assert_batches_equal(sync.collect(CP_SAMPLER, 60), asyn.collect(CP_SAMPLER, 60))


def test_env_subsets_reproduce_the_full_collector():
    """What a distributed backend relies on: env i's data depends only on (seed, i)."""
    kw = {"normalize_obs": True, "normalize_reward": True}
    full = cartpole(5, seed=7, **kw)
    parts = [
        cartpole(2, seed=7, env_indices=[0, 1], auto_update_stats=False, **kw),
        cartpole(3, seed=7, env_indices=[2, 3, 4], auto_update_stats=False, **kw),
    ]
    for _ in range(3):
        ref = full.collect(CP_SAMPLER, 45)  # updates its stats from the whole batch
        batch = concat_batches([p.collect(CP_SAMPLER, 45) for p in parts])
        assert_batches_equal(ref, batch)
        assert ref.episodes and ref.final_obs.shape[0] > 0
        for p in parts:  # the "driver" broadcasts the stats of the merged batch
            p.obs_normalizer.load_state_dict(full.obs_normalizer.state_dict())
            p.reward_scaler.load_state_dict(full.reward_scaler.state_dict())
    # a collector over envs [1, 0] (other grouping, other order) gives the same columns
    swapped = cartpole(2, seed=7, env_indices=[1, 0]).collect(CP_SAMPLER, 30)
    plain = cartpole(2, seed=7).collect(CP_SAMPLER, 30)
    assert np.array_equal(swapped.actions[:, ::-1], plain.actions)


@pytest.mark.parametrize("env", ["cartpole", "hopper"])
def test_state_dict_resumes_bit_exactly(env):
    if env == "cartpole":
        make = lambda: cartpole(3, seed=2, normalize_obs=True, normalize_reward=True)  # noqa: E731
        sampler, steps = CP_SAMPLER, 37
    else:
        pytest.importorskip("mujoco")
        make = lambda: LocalCollector("Hopper-v5", 2, 2, normalize_obs=True)  # noqa: E731
        sampler = NumpyMLPSampler(mlp(11, 3), "gaussian", log_std=np.full(3, -0.5))
        steps = 40
    straight = make()
    straight.collect(sampler, steps)
    want = straight.collect(sampler, steps)
    first = make()
    first.collect(sampler, steps)
    state = pickle.loads(pickle.dumps(first.state_dict()))  # survives serialisation
    first.close()
    resumed = make()
    resumed.load_state_dict(state)
    assert_batches_equal(resumed.collect(sampler, steps), want)


def test_batch_semantics_and_next_values():
    col = LocalCollector(EnvFactory("CartPole-v1", kwargs={"max_episode_steps": 9}), 2, 0)
    col.collect(CP_SAMPLER, 4)  # episodes straddle batches
    b = col.collect(CP_SAMPLER, 30)
    T, N = b.n_steps, b.n_envs
    assert b.obs.shape == (T, N, 4) and b.obs.dtype == np.float32
    assert b.actions.shape == (T, N) and b.actions.dtype == np.int64
    assert b.raw_obs is None and b.discounted_returns is None
    np.testing.assert_array_equal(b.rewards, b.raw_rewards)
    assert b.truncated.any()
    done_idx = np.argwhere(b.dones)
    np.testing.assert_array_equal(b.final_index, done_idx)  # ordered by (t, env)
    assert [(e.step, e.env_index) for e in b.episodes] == [tuple(x) for x in done_idx]
    assert all(e.length <= 9 and e.ret == e.length for e in b.episodes)
    assert any(e.length > e.step + 1 for e in b.episodes)  # started in the previous batch
    b.validate()
    f = lambda x: x.sum(1) * 2.0  # noqa: E731
    values, nxt = compute_next_values(f, b)
    k = 0
    for t in range(T):
        for i in range(N):
            if b.dones[t, i]:
                want = f(torch.from_numpy(b.final_obs[k : k + 1]))[0]
                k += 1
            elif t + 1 < T:
                want = f(torch.from_numpy(b.obs[t + 1, i : i + 1]))[0]
            else:
                want = f(torch.from_numpy(b.last_obs[i : i + 1]))[0]
            assert nxt[t, i] == want and values[t, i] == f(torch.from_numpy(b.obs[t, i : i + 1]))[0]


def test_box_actions_stored_unclipped_sent_clipped():
    s = NumpyMLPSampler(mlp(2, 2), "gaussian", log_std=np.full(2, 1.5))
    b = LocalCollector(lambda i, seed: EchoEnv(), 2, 0).collect(s, 20)
    assert np.abs(b.actions).max() > 1.0  # stored as sampled
    sent = np.clip(b.actions, -1.0, 1.0)
    k = 0
    for t in range(b.n_steps):
        for i in range(b.n_envs):  # EchoEnv observes the action it received
            if b.dones[t, i]:
                np.testing.assert_array_equal(b.final_obs[k], sent[t, i])
                k += 1
            else:
                nxt = b.obs[t + 1, i] if t + 1 < b.n_steps else b.last_obs[i]
                np.testing.assert_array_equal(nxt, sent[t, i])
    assert k == 8


def test_multidiscrete_start_offset_and_discrete_obs_one_hot():
    space = spaces.MultiDiscrete([2, 3], start=[5, -1])
    s = NumpyMLPSampler(mlp(2, 5), "multicategorical", nvec=[2, 3])
    b = LocalCollector(lambda i, seed: EchoEnv(space), 1, 0).collect(s, 4)
    np.testing.assert_array_equal(b.obs[1:, 0], b.actions[:-1, 0] + [5, -1])
    lake = LocalCollector("FrozenLake-v1", 2, 0).collect(
        NumpyMLPSampler(mlp(16, 4), "categorical"), 10
    )
    assert lake.obs.shape == (10, 2, 16)
    np.testing.assert_array_equal(lake.obs.sum(axis=2), 1.0)


@pytest.mark.parametrize(("nan_reward", "what"), [(False, "observation"), (True, "reward")])
def test_non_finite_env_output_names_env_and_step(nan_reward, what):
    make = lambda i, seed: EchoEnv(nan_at=4 if i == 1 else -1, nan_reward=nan_reward)  # noqa: E731
    col = LocalCollector(make, 3, 0)
    s = NumpyMLPSampler(mlp(2, 2), "gaussian", log_std=np.zeros(2))
    with pytest.raises(FloatingPointError, match=f"env 1 returned a non-finite {what} at step 3"):
        col.collect(s, 10)


def test_validate_catches_bad_batches():
    b = cartpole(2).collect(CP_SAMPLER, 5)
    b.rewards[2, 1] = np.nan
    with pytest.raises(FloatingPointError, match="reward from env 1 at step 2"):
        b.validate()
    b = LocalCollector(lambda i, seed: EchoEnv(), 2, 0, env_indices=[3, 4]).collect(
        NumpyMLPSampler(mlp(2, 2), "gaussian", log_std=np.zeros(2)), 12
    )
    b.validate()
    b.final_obs[-1, 0] = np.inf  # last episode end: step 9, both envs; the last row is env 4
    with pytest.raises(FloatingPointError, match="final observation from env 4 at step 9"):
        b.validate()
    b.obs[7, 0, 1] = np.nan
    with pytest.raises(FloatingPointError, match="observation from env 3 at step 7"):
        b.validate()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_envs=0"):
        cartpole(0)
    with pytest.raises(ValueError, match="seed=None"):
        LocalCollector(CARTPOLE, 1, None)
    with pytest.raises(ValueError, match="vec='ray'"):
        cartpole(1, vec="ray")
    with pytest.raises(ValueError, match="env_indices"):
        cartpole(2, env_indices=[1, 1])
    col = cartpole(2)
    with pytest.raises(ValueError, match="n_steps=0"):
        col.collect(CP_SAMPLER, 0)
    with pytest.raises(ValueError, match="build a 'categorical' sampler"):
        col.collect(NumpyMLPSampler(mlp(4, 2), "gaussian", log_std=np.zeros(2)), 3)
    with pytest.raises(ValueError, match="env indices \\[0, 1\\]"):
        cartpole(2, env_indices=[2, 3]).load_state_dict(col.state_dict())
    with pytest.raises(ValueError, match="unsupported observation space"):
        LocalCollector(lambda i, s: gym.make("Blackjack-v1"), 1, 0)


def test_noise_contract_for_other_backends():
    """Env i's noise is default_rng(SeedSequence(seed).spawn(n)[i]), drawn (T, ...) at once."""
    s = NumpyMLPSampler(mlp(2, 2), "gaussian", log_std=np.array([0.1, -0.2]))
    b = LocalCollector(lambda i, seed: EchoEnv(), 3, 11).collect(s, 6)
    for i, child in enumerate(np.random.SeedSequence(11).spawn(3)):
        noise = np.random.default_rng(child).standard_normal((6, 2))
        np.testing.assert_array_equal(b.actions[:, i], s.sample(b.obs[:, i], noise))
