"""gSDE in the agents: the sampler's noise z(s) ε, held matrices, the exact Fisher, errors."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from natgrad.distributions import StateDependentGaussian
from natgrad.fisher import GGNFisher, MLPFisher
from natgrad.params import numel
from natgrad.rl import TRPO
from natgrad.rl.config import PolicyConfig
from natgrad.rl.policies.actor_critic import ActorCritic
from natgrad.rl.policies.sampler import NumpyMLPSampler, TorchSampler
from natgrad.rl.rollout.collector import LocalCollector

BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)


def _policy(space=BOX, **kw):
    torch.manual_seed(0)
    return ActorCritic(3, space, policy_hidden=(8, 5), use_sde=True, log_std_init=-0.5, **kw)


def test_policy_has_a_latent_by_action_log_std_and_the_state_dependent_law():
    pol = _policy()
    assert pol.log_std.shape == (5, 2)
    obs = torch.randn(4, 3)
    dist = pol.distribution(obs)
    assert isinstance(dist, StateDependentGaussian)
    mean, z = pol.latent(obs)
    assert torch.equal(dist.mean, mean) and torch.equal(dist.latent, z.detach())
    assert not dist.latent.requires_grad


@pytest.mark.parametrize("fast", [True, False])
def test_sampler_noise_is_latent_times_the_scaled_matrix(fast):
    pol = _policy(fast_paths=fast)
    sampler = pol.sampler()
    assert isinstance(sampler, NumpyMLPSampler if fast else TorchSampler)
    assert sampler.noise_shape == (5, 2) and sampler.noise_hold == -1
    obs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal((4, 5, 2))
    acts = sampler.sample(obs, noise)
    with torch.no_grad():
        mean, z = pol.latent(torch.from_numpy(obs))
        eps = torch.from_numpy(noise).float() * pol.log_std.exp()
        want = mean + torch.einsum("nk,nkd->nd", z, eps)
    assert np.allclose(acts, want.numpy(), atol=1e-5)
    assert np.allclose(sampler.mode(obs), mean.numpy(), atol=1e-6)
    # rows do not depend on the batch they are computed in (bit for bit)
    assert np.array_equal(sampler.sample(obs[2:3], noise[2:3])[0], acts[2]) or not fast


@pytest.mark.parametrize("freq", [1, 3, -1])
def test_collector_holds_each_exploration_matrix_for_sde_sample_freq_steps(freq):
    pol = _policy(spaces.Box(-2.0, 2.0, (1,), np.float32), sde_sample_freq=freq)  # Pendulum's
    seen = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner
            for k in ("kind", "noise_shape", "noise_kind", "noise_hold", "action_shape",
                      "action_dtype"):  # fmt: skip
                setattr(self, k, getattr(inner, k))

        def sample(self, obs, noise):
            seen.append(noise.copy())
            return self.inner.sample(obs, noise)

    col = LocalCollector("Pendulum-v1", 2, seed=0)
    col.collect(Recording(pol.sampler()), 7)
    hold = 7 if freq == -1 else freq
    for t in range(1, 7):
        same = np.array_equal(seen[t], seen[t - 1])
        assert same == (t % hold != 0), (t, hold)
    assert not np.array_equal(seen[0][0], seen[0][1])  # each env draws its own matrix
    col.close()


def test_mlp_fisher_of_the_sde_policy_is_the_ggn(float64):
    torch.manual_seed(1)
    pol = ActorCritic(3, BOX, policy_hidden=(6, 4), use_sde=True).double()
    obs = torch.randn(7, 3, dtype=torch.float64)
    params = pol.policy_parameters()
    fast = MLPFisher(pol.actor, obs, pol.distribution_from_output, log_std=pol.log_std,
                     with_latent=True)  # fmt: skip
    ref = GGNFisher.from_distribution(pol.distribution(obs), params)
    v = torch.randn(numel(params), dtype=torch.float64)
    assert torch.allclose(fast.mv(v), ref.mv(v), atol=1e-12, rtol=1e-10)


def test_smoke_trpo_with_gsde_learns_a_few_iterations():
    agent = TRPO("Pendulum-v1", n_envs=2, n_steps=64, batch_size=32, n_critic_updates=2,
                 use_sde=True, sde_sample_freq=4, use_preset=False)  # fmt: skip
    for _ in range(2):
        m = agent.train_iteration()
        assert np.isfinite(m["kl"]) and m["cg_iterations"] > 0
    act, _ = agent.predict(np.zeros(3, np.float32), deterministic=False)
    assert act.shape == (1,)
    agent.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(env="CartPole-v1", use_sde=True), "Box action space"),
        (dict(env="Pendulum-v1", use_sde=True, fisher="kfac"), "kfac"),
        (dict(env="Pendulum-v1", use_sde=True, sde_sample_freq=0), "sde_sample_freq"),
    ],
)
def test_bad_gsde_settings_say_how_to_fix_them(kwargs, match):
    env = kwargs.pop("env")
    with pytest.raises(ValueError, match=match):
        TRPO(env, n_envs=1, n_steps=32, use_preset=False, **kwargs)


def test_gsde_needs_a_sequential_actor_ending_in_linear():
    actor = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="nn.Sequential actor"):
        ActorCritic(3, BOX, actor=actor, use_sde=True)
    assert PolicyConfig(use_sde=True, sde_sample_freq=8).sde_sample_freq == 8
