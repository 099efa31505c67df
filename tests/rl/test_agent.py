"""The TRPO/NPG agents: resume is bit-exact, steps stay in the trust region, failures are clear."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from natgrad.rl import NPG, TRPO, RolloutError
from natgrad.rl.algos import step as step_module

from .bad_envs import NAN_ENV

TIMING = {"rollout_seconds", "update_seconds", "steps_per_second"}


def small(cls, env="CartPole-v1", **kw):
    """A fast agent: 2 envs × 64 steps, short critic fits, no preset."""
    base = dict(n_envs=2, n_steps=64, batch_size=32, n_critic_updates=2, use_preset=False)
    base.update(kw)
    return cls(env, **base)


def _metrics_without_timing(ms):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in ms]


def _same(a, b):
    return all(
        (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for m1, m2 in zip(a, b)
        for x, y in zip(m1.values(), m2.values())
    ) and all(m1.keys() == m2.keys() for m1, m2 in zip(a, b))


@pytest.mark.parametrize(
    "cls, env, extra",
    [
        (TRPO, "CartPole-v1", {}),
        (NPG, "Pendulum-v1", dict(normalize_obs=True, normalize_reward=True)),
        (TRPO, "Pendulum-v1", dict(fisher="kfac")),
        (TRPO, "Pendulum-v1", dict(use_sde=True, sde_sample_freq=5)),
    ],
)
@pytest.mark.parametrize("helper", [False, True])
def test_resume_is_bit_exact(tmp_path, cls, env, extra, helper):
    """N iterations straight equal N/2, save, load, N/2: same parameters, same metrics.

    With the critic helper the checkpoint is written while the next batch is pending.
    """
    straight = small(cls, env, critic_worker=helper, **extra)
    m_straight = [straight.train_iteration(ahead=i < 3) for i in range(4)]

    first = small(cls, env, critic_worker=helper, **extra)
    m_resumed = [first.train_iteration(ahead=True) for _ in range(2)]
    pending = first.rollouts.state_dict()["pending_rollout"]
    assert (pending is not None) == (first.critic_fitter.worker is not None)
    path = first.save(tmp_path / "ckpt.pt")
    first.close()
    second = cls.load(path)
    m_resumed += [second.train_iteration(ahead=i < 1) for i in range(2)]

    for p, q in zip(straight.policy.state_dict().values(), second.policy.state_dict().values()):
        assert torch.equal(p, q)
    assert _same(_metrics_without_timing(m_straight), _metrics_without_timing(m_resumed))
    straight.close()
    second.close()


def test_learn_twice_trains_both_budgets_and_resumes_like_one_call():
    """SB3's meaning: learn(n) adds n steps; two calls equal one call of 2n, bit for bit."""
    a = small(TRPO)
    a.learn(256)
    a.learn(256)
    b = small(TRPO)
    b.learn(512)
    assert a.total_steps == b.total_steps == 512
    assert a.num_timesteps == 256  # reset_num_timesteps=True zeroes the counter only
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(p, q)
    a.learn(128, reset_num_timesteps=False)
    assert a.num_timesteps == 384
    a.close()
    b.close()


def test_box_actions_are_clipped_only_for_the_env():
    agent = small(TRPO, "Pendulum-v1", log_std_init=2.0)
    rollout = agent.collector.collect(agent.policy.sampler(), 32)
    assert np.abs(rollout.actions).max() > 2.0  # stored unclipped (σ = e² is wide)
    act, _ = agent.predict(np.zeros(3, np.float32), deterministic=False)
    assert -2.0 <= float(act[0]) <= 2.0
    agent.close()


def test_custom_actor_and_critic_use_the_autograd_paths(caplog):
    actor = nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 2))
    critic = nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 1))
    with caplog.at_level("INFO", logger="natgrad"):
        agent = small(TRPO, actor=actor, critic=critic)
    assert agent.policy.actor is actor and agent.critic_fitter.trainer is None
    notes = [r.getMessage() for r in caplog.records if "not a plain MLP" in r.getMessage()]
    assert len(notes) == 2 and "actor" in notes[0] and "critic" in notes[1]
    m = agent.train_iteration()
    assert np.isfinite(m["value_loss"]) and m["cg_iterations"] > 0
    agent.close()


@pytest.mark.parametrize("sde", [{}, dict(use_sde=True, sde_sample_freq=4)])
def test_fast_paths_switch_gives_the_same_training_to_rounding(sde):
    """The numpy sampler, hand-linearised Fisher and numpy critic against autograd."""
    exact = dict(seed=4, cg_atol=0.0, cg_rtol=0.0, **sde)  # CG runs all its iterations
    fast = small(TRPO, "Pendulum-v1", **exact)
    slow = small(TRPO, "Pendulum-v1", fast_paths=False, **exact)
    assert fast.policy.actor_spec is not None and slow.policy.actor_spec is None
    assert slow.critic_fitter.trainer is None and fast.critic_fitter.trainer is not None
    mf, ms = fast.train_iteration(), slow.train_iteration()
    assert mf["cg_iterations"] == ms["cg_iterations"]
    assert mf["kl"] == pytest.approx(ms["kl"], rel=1e-3)
    for p, q in zip(fast.policy.parameters(), slow.policy.parameters()):
        assert torch.allclose(p, q, atol=1e-4)
    fast.close()
    slow.close()


def test_failed_line_search_restores_policy(monkeypatch):
    agent = small(TRPO)
    before = [p.detach().clone() for p in agent.policy.policy_parameters()]

    monkeypatch.setattr(step_module.Surrogate, "kl", lambda self: torch.tensor(float("nan")))
    m = agent.train_iteration()
    assert m["line_search_success"] == 0.0
    after = agent.policy.policy_parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    agent.close()


def test_nan_from_env_names_the_iteration():
    agent = small(TRPO, NAN_ENV, n_envs=1)
    for _ in range(4):  # steps 1-256 are fine (NaN from step 300 of the env)
        agent.train_iteration()
    with pytest.raises(
        RolloutError, match=r"iteration 5: env 0 returned a non-finite (final )?observation"
    ):
        agent.train_iteration()
    agent.close()


def test_nan_in_a_batch_collected_ahead_surfaces_when_its_iteration_starts(tmp_path):
    agent = small(TRPO, NAN_ENV, n_envs=1, critic_worker=True)
    agent.train_iteration()
    path = agent.save(tmp_path / "good.pt")
    for _ in range(3):  # the last one collects iteration 5's batch ahead, which hits the NaN
        m = agent.train_iteration(ahead=True)
    assert m["iteration"] == 4 and agent.total_steps == 256
    if agent.critic_fitter.worker is not None:  # (no collecting ahead without the helper)
        with pytest.raises(RolloutError, match="cannot save.*undefined state"):
            agent.save(tmp_path / "bad.pt")
        assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(RolloutError, match=r"iteration 5: env 0 returned a non-finite"):
        agent.train_iteration()
    agent.load_state_dict(TRPO.load(path).state_dict())  # a good state clears the error
    assert agent.train_iteration()["iteration"] == 2
    agent.close()


def test_a_critic_sharing_layers_with_the_actor_gets_no_helper_process():
    trunk = nn.Linear(4, 8)
    actor = nn.Sequential(trunk, nn.Tanh(), nn.Linear(8, 2))
    critic = nn.Sequential(trunk, nn.Tanh(), nn.Linear(8, 1))
    agent = small(TRPO, actor=actor, critic=critic, critic_worker=True)
    assert agent.critic_fitter.trainer is not None and agent.critic_fitter.worker is None
    assert np.isfinite(agent.train_iteration(ahead=True)["value_loss"])
    assert agent.rollouts.state_dict()["pending_rollout"] is None
    agent.close()


def test_agent_uses_the_preset_of_an_id_only():
    agent = TRPO("CartPole-v1")
    assert agent.config.n_steps == 512 and agent.config.n_critic_updates == 20
    assert agent.rollout_config.n_envs == 2 and "zoo" in agent.preset_source
    agent.close()
    plain = TRPO("CartPole-v1", use_preset=False)
    assert plain.config.n_steps == 2048 and plain.preset_source == ""
    plain.close()


@pytest.mark.parametrize("fisher", ["ggn", "kl_hessian", "kfac"])
def test_every_fisher_keeps_trpo_inside_the_trust_region(fisher):
    agent = small(TRPO, "Pendulum-v1", fisher=fisher, max_kl=0.005)
    for _ in range(3):
        m = agent.train_iteration()
        assert m["kl"] <= 0.005 or m["line_search_success"] == 0.0
    assert (agent.kfac is not None) == (fisher == "kfac")
    agent.close()


def test_ggn_and_kl_hessian_take_the_same_step():
    """Same Fisher, two ways of computing its products: the same TRPO step (to rounding)."""
    a = small(TRPO, "Pendulum-v1", fisher="ggn")
    b = small(TRPO, "Pendulum-v1", fisher="kl_hessian")
    ma, mb = a.train_iteration(), b.train_iteration()
    assert ma["cg_iterations"] == mb["cg_iterations"]
    for p, q in zip(a.policy.policy_parameters(), b.policy.policy_parameters()):
        assert torch.allclose(p, q, atol=1e-4)
    a.close()
    b.close()


def test_npg_takes_the_step_of_its_radius_without_a_line_search():
    agent = small(NPG, "Pendulum-v1", max_kl=0.01)
    m = agent.train_iteration()
    assert m["line_search_steps"] == 0.0
    assert m["kl"] == pytest.approx(0.01, rel=0.5)  # the quadratic model's KL, not enforced
    agent.close()


@pytest.mark.parametrize("clip", [0.5, 10.0])
def test_clip_obs_is_the_bound_of_normalised_observations(clip):
    agent = small(TRPO, "Pendulum-v1", normalize_obs=True, clip_obs=clip, n_envs=1)
    agent.train_iteration()  # statistics from one batch: later observations can exceed 0.5σ
    batch = agent.collector.collect(agent.policy.sampler(), 256)
    assert np.abs(batch.obs).max() <= clip
    if clip < 1:
        assert np.isclose(np.abs(batch.obs).max(), clip)  # the bound is reached, so it acts
    assert agent.collector.obs_normalizer.clip == clip
    agent.close()


def test_clip_obs_changed_on_load_is_the_one_used(tmp_path):
    agent = small(TRPO, "Pendulum-v1", normalize_obs=True, clip_obs=5.0)
    agent.train_iteration()
    path = agent.save(tmp_path / "a.pt")
    again = TRPO.load(path, clip_obs=0.25)
    assert again.collector.obs_normalizer.clip == 0.25 and again.config.clip_obs == 0.25
    agent.close()
    again.close()
