"""The TRPO/NPG agents: resume is bit-exact, the API round-trips, failures are clear."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from natgrad.rl import update as update_module
from natgrad.rl.agent import NPG, TRPO, Agent, RolloutError
from natgrad.rl.config import NPGConfig, TRPOConfig

from .bad_envs import DICT_ACTION_ENV, NAN_ENV

TIMING = {"rollout_seconds", "update_seconds", "steps_per_second"}


def small(env="CartPole-v1", **kw):
    base = dict(
        env_id=env, n_envs=2, n_steps=64, batch_size=32, n_critic_updates=2, tensorboard=False
    )
    base.update(kw)
    return base


def _metrics_without_timing(ms):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in ms]


def _same(a, b):
    return all(
        (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
        for m1, m2 in zip(a, b)
        for x, y in zip(m1.values(), m2.values())
    ) and all(m1.keys() == m2.keys() for m1, m2 in zip(a, b))


@pytest.mark.parametrize(
    "cls, cfg_cls, env, extra",
    [
        (TRPO, TRPOConfig, "CartPole-v1", {}),
        (NPG, NPGConfig, "Pendulum-v1", dict(normalize_obs=True, normalize_reward=True)),
        (TRPO, TRPOConfig, "Pendulum-v1", dict(fisher="kfac")),
    ],
)
@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_is_bit_exact(tmp_path, cls, cfg_cls, env, extra, prefetch):
    """N iterations straight equal N/2, save, load, N/2: same parameters, same metrics.

    With ``prefetch`` the checkpoint is written while the next batch is pending.
    """
    cfg = cfg_cls(**small(env, **extra))
    straight = cls(config=cfg)
    m_straight = [straight.train_iteration(prefetch=prefetch and i < 3) for i in range(4)]

    first = cls(config=cfg)
    m_resumed = [first.train_iteration(prefetch=prefetch) for _ in range(2)]
    assert (first._pending is not None) == (prefetch and first.critic_worker is not None)
    path = first.save(tmp_path / "ckpt.pt")
    first.close()
    second = cls.load(path)
    m_resumed += [second.train_iteration(prefetch=prefetch and i < 1) for i in range(2)]

    for p, q in zip(straight.policy.state_dict().values(), second.policy.state_dict().values()):
        assert torch.equal(p, q)
    assert _same(_metrics_without_timing(m_straight), _metrics_without_timing(m_resumed))
    straight.close()
    second.close()


def test_predict_save_load_roundtrip(tmp_path):
    agent = TRPO(config=TRPOConfig(**small()))
    agent.learn(256)
    assert agent.env_steps >= 256
    obs = np.zeros(4, dtype=np.float32)
    a = agent.predict(obs)
    assert a.shape == () and int(a) in (0, 1)
    batch = agent.predict(np.zeros((5, 4), dtype=np.float32))
    assert batch.shape == (5,)
    agent.save(tmp_path / "a.pt")
    loaded = TRPO.load(tmp_path / "a.pt")
    assert np.array_equal(
        loaded.predict(np.ones((3, 4), np.float32)), agent.predict(np.ones((3, 4), np.float32))
    )
    with pytest.raises(ValueError, match="NPG.load|'trpo' agent"):
        NPG.load(tmp_path / "a.pt")
    assert isinstance(Agent.load(tmp_path / "a.pt"), TRPO)
    agent.close()
    loaded.close()


def test_box_actions_are_clipped_only_for_the_env():
    agent = TRPO(config=TRPOConfig(**small("Pendulum-v1"), log_std_init=2.0))
    rollout = agent.collector.collect(agent.policy.sampler(), 32)
    assert np.abs(rollout.actions).max() > 2.0  # stored unclipped (σ = e² is wide)
    act = agent.predict(np.zeros(3, np.float32), deterministic=False)
    assert -2.0 <= float(act[0]) <= 2.0
    agent.close()


def test_callback_can_stop_learning():
    agent = TRPO(config=TRPOConfig(**small()))
    seen = []
    agent.learn(10_000, callback=lambda ag, m: seen.append(m) or len(seen) < 2)
    assert len(seen) == 2 and agent.iteration == 2
    agent.close()


def test_custom_actor_and_critic():
    actor = nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 2))
    critic = nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 1))
    agent = TRPO(config=TRPOConfig(**small()), actor=actor, critic=critic)
    assert agent.policy.actor is actor and agent.critic_trainer is None
    m = agent.train_iteration()
    assert np.isfinite(m["value_loss"]) and m["cg_iterations"] > 0
    agent.close()


def test_failed_line_search_restores_policy(monkeypatch):
    agent = TRPO(config=TRPOConfig(**small()))
    before = [p.detach().clone() for p in agent.policy.policy_parameters()]

    class NaNForward(update_module._Forward):
        def __call__(self):
            d = super().__call__()
            return d.with_params([p * float("nan") for p in d.params])

    monkeypatch.setattr(update_module, "_Forward", NaNForward)
    m = agent.train_iteration()
    assert m["line_search_success"] == 0.0
    after = agent.policy.policy_parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    agent.close()


def test_nan_from_env_names_the_iteration():
    agent = TRPO(config=TRPOConfig(**small(NAN_ENV, n_envs=1)))
    agent.train_iteration()  # steps 1-64 are fine (NaN from step 300 of the env)
    for _ in range(3):
        agent.train_iteration()
    with pytest.raises(
        RolloutError, match=r"iteration 5: env 0 returned a non-finite (final )?observation"
    ):
        agent.train_iteration()
    agent.close()


def test_nan_in_a_batch_collected_ahead_surfaces_when_its_iteration_starts(tmp_path):
    agent = TRPO(config=TRPOConfig(**small(NAN_ENV, n_envs=1)))
    agent.train_iteration()
    path = agent.save(tmp_path / "good.pt")
    for _ in range(3):  # the last one collects iteration 5's batch ahead, which hits the NaN
        m = agent.train_iteration(prefetch=True)
    assert m["iteration"] == 4 and agent.env_steps == 256
    if agent.critic_worker is not None:  # (no prefetch without the helper)
        assert agent._prefetch_error is not None
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
    agent = TRPO(config=TRPOConfig(**small()), actor=actor, critic=critic)
    assert agent.critic_trainer is not None and agent.critic_worker is None
    assert np.isfinite(agent.train_iteration(prefetch=True)["value_loss"])
    assert agent._pending is None
    agent.close()


def test_bad_environment_inputs():
    with pytest.raises(ValueError, match="did you mean 'CartPole-v1'"):
        TRPO("CartPol-v1")
    with pytest.raises(ValueError, match="Dict"):
        TRPO(config=TRPOConfig(**small(DICT_ACTION_ENV)))
    with pytest.raises(ValueError, match="give an env id"):
        TRPO()
    with pytest.raises(ValueError, match="needs a TRPOConfig"):
        TRPO(config=NPGConfig(**small()))
    with pytest.raises(ValueError, match="differs from config.env_id"):
        TRPO("Pendulum-v1", config=TRPOConfig(**small()))


def test_agent_uses_the_preset():
    agent = TRPO("CartPole-v1")
    assert agent.config.n_steps == 512 and agent.config.n_critic_updates == 20
    agent.close()


@pytest.mark.parametrize("fisher", ["ggn", "kl_hessian", "kfac"])
def test_every_fisher_keeps_trpo_inside_the_trust_region(fisher):
    agent = TRPO(config=TRPOConfig(**small("Pendulum-v1"), fisher=fisher, max_kl=0.005))
    for _ in range(3):
        m = agent.train_iteration()
        assert m["kl"] <= 0.005 or m["line_search_success"] == 0.0
    assert (agent.kfac is not None) == (fisher == "kfac")
    agent.close()


def test_ggn_and_kl_hessian_take_the_same_step():
    """Same Fisher, two ways of computing its products: the same TRPO step (to rounding)."""
    a = TRPO(config=TRPOConfig(**small("Pendulum-v1"), fisher="ggn"))
    b = TRPO(config=TRPOConfig(**small("Pendulum-v1"), fisher="kl_hessian"))
    ma, mb = a.train_iteration(), b.train_iteration()
    assert ma["cg_iterations"] == mb["cg_iterations"]
    for p, q in zip(a.policy.policy_parameters(), b.policy.policy_parameters()):
        assert torch.allclose(p, q, atol=1e-4)
    a.close()
    b.close()
