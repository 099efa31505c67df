"""The SB3-grade surface: what TRPO(...) accepts, learn/predict/save/load, parameters."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from natgrad.rl import NPG, TRPO, RolloutConfig, TRPOConfig

FAST = dict(n_steps=64, batch_size=32, n_critic_updates=1)


class Corridor(gym.Env):
    """A small env of the user's own (not registered): walk right to the goal."""

    observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 6):
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.pos / self.length, 1.0], np.float32)

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos >= self.length
        return self._obs(), (1.0 if done else -0.01), done, False, {}


def _params(model):
    return [p.detach().clone() for p in model.policy.parameters()]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TRPO("MlpPolicy", gym.make("CartPole-v1"), **FAST),
        lambda: TRPO("CnnPolicy", "CartPole-v1", use_preset=False, **FAST),
        lambda: TRPO(env="CartPole-v1", use_preset=False, **FAST),
        lambda: TRPO(Corridor, n_envs=3, **FAST),
        lambda: TRPO(lambda: Corridor(4), **FAST),
        lambda: TRPO(Corridor(), **FAST),
        lambda: TRPO(gym.vector.SyncVectorEnv([Corridor, Corridor]), **FAST),
        lambda: TRPO("CartPole-v1", config=TRPOConfig(**FAST), rollout=RolloutConfig(n_envs=2)),
    ],
    ids=["sb3-object", "cnn-name", "env-kw", "class-3", "factory", "object", "vector", "configs"],
)
def test_every_way_to_give_an_env_trains_and_predicts(make):
    model = make()
    model.learn(128)
    assert model.num_timesteps >= 128
    obs = model.observation_space.sample()
    action, state = model.predict(obs)
    assert model.action_space.contains(np.asarray(action).astype(model.action_space.dtype))
    assert state is None
    batch, _ = model.predict(np.stack([obs, obs]), deterministic=True)
    assert batch.shape == (2,)
    model.close()


def test_rollout_setups_an_env_object_cannot_give_are_refused_clearly():
    with pytest.raises(ValueError, match="n_envs=4, but env is a single env object"):
        TRPO(Corridor(), n_envs=4)
    with pytest.raises(ValueError, match="vec='async' needs an env id or a picklable"):
        TRPO(Corridor(), vec="async")
    venv = gym.vector.SyncVectorEnv([Corridor, Corridor])
    with pytest.raises(ValueError, match="holding 2 env"):
        TRPO(venv, n_envs=3)
    with pytest.raises(ValueError, match="env_kwargs.*cannot apply to an env object"):
        TRPO(Corridor(), env_kwargs={"length": 3})


def test_bad_constructor_arguments_name_the_fix():
    with pytest.raises(ValueError, match="no env given"):
        TRPO()
    with pytest.raises(ValueError, match="did you mean 'CartPole-v1'"):
        TRPO("CartPol-v1")
    with pytest.raises(ValueError, match="is not an env"):
        TRPO(42)
    with pytest.raises(ValueError, match="needs a TRPOConfig"):
        TRPO("CartPole-v1", config=NPG.config_class())
    with pytest.raises(ValueError, match="unknown setting 'max_k'.*did you mean max_kl"):
        TRPO("CartPole-v1", max_k=0.1)
    with pytest.raises(ValueError, match="total_steps: run settings are not constructor"):
        TRPO("CartPole-v1", total_steps=1000)
    with pytest.raises(ValueError, match="device='cuda'.*CPU"):
        TRPO("CartPole-v1", device="cuda")
    with pytest.raises(ValueError, match="seed=-1"):
        TRPO("CartPole-v1", seed=-1)
    with pytest.raises(ValueError, match="first argument is either an SB3 policy name"):
        TRPO("CartPole-v1", "Pendulum-v1")
    with pytest.raises(ValueError, match="Dict"):
        TRPO("tests.rl.bad_envs:NatgradDictAction-v0")


def test_sb3_hyperparameter_names_and_policy_kwargs():
    model = TRPO(
        "MlpPolicy", "Pendulum-v1", learning_rate=3e-4, target_kl=0.02, cg_max_steps=7,
        line_search_shrinking_factor=0.5, sub_sampling_factor=2, use_preset=False,
        policy_kwargs=dict(net_arch=dict(pi=[16], vf=[8, 8]), activation_fn=nn.ReLU,
                           log_std_init=-1.0, ortho_init=False),
    )  # fmt: skip
    c = model.config
    assert (c.critic_lr, c.max_kl, c.cg_iters, c.line_search_shrink) == (3e-4, 0.02, 7, 0.5)
    assert c.fisher_subsample == 0.5
    assert [m.out_features for m in model.policy.actor if isinstance(m, nn.Linear)] == [16, 1]
    assert [m.out_features for m in model.policy.critic if isinstance(m, nn.Linear)] == [8, 8, 1]
    assert isinstance(model.policy.actor[1], nn.ReLU)
    assert torch.equal(model.policy.log_std, torch.full((1,), -1.0))
    model.close()


def test_seed_none_draws_one_and_keeps_it():
    model = TRPO("CartPole-v1", seed=None, use_preset=False, **FAST)
    assert isinstance(model.seed, int) and model.seed >= 0
    model.close()


def test_predict_refuses_bad_observations_and_returns_sb3_pairs():
    model = TRPO("CartPole-v1", use_preset=False, **FAST)
    with pytest.raises(ValueError, match=r"obs has shape \(3,\); expected one observation of "
                       r"shape \(4,\) or a batch of shape \(n, 4\)"):  # fmt: skip
        model.predict(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite value at index \\[2\\]"):
        model.predict(np.array([0.0, 0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="dtype <U"):
        model.predict(np.array(["a", "b", "c", "d"]))
    state = object()
    _, same = model.predict(np.zeros(4), state=state, episode_start=np.array([True]))
    assert same is state
    model.close()


def test_stochastic_predict_by_default_as_in_sb3():
    model = TRPO("Pendulum-v1", use_preset=False, log_std_init=1.0, **FAST)
    obs = np.zeros(3, np.float32)
    draws = {float(model.predict(obs)[0][0]) for _ in range(5)}
    assert len(draws) > 1  # sampled
    assert len({float(model.predict(obs, deterministic=True)[0][0]) for _ in range(3)}) == 1
    model.close()


def test_save_load_with_a_custom_actor_and_critic(tmp_path):
    actor = nn.Sequential(nn.Linear(4, 16), nn.ELU(), nn.Linear(16, 2))
    critic = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
    model = TRPO("CartPole-v1", actor=actor, critic=critic, use_preset=False, **FAST)
    model.learn(128)
    path = model.save(tmp_path / "custom.pt")
    loaded = TRPO.load(path)
    assert isinstance(loaded.policy.actor[1], nn.ELU)
    assert isinstance(loaded.policy.critic[1], nn.SiLU)
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0],
                          model.predict(obs, deterministic=True)[0])  # fmt: skip
    for p, q in zip(_params(model), _params(loaded)):
        assert torch.equal(p, q)
    # custom_objects supplies the networks instead (e.g. their class is not importable)
    other = TRPO.load(path, custom_objects={"actor": lambda: nn.Sequential(
        nn.Linear(4, 16), nn.ELU(), nn.Linear(16, 2))})  # fmt: skip
    assert torch.equal(_params(other)[0], _params(model)[0])
    with pytest.raises(ValueError, match="custom_objects has keys \\['policy'\\]"):
        TRPO.load(path, custom_objects={"policy": 1})
    for m in (model, loaded, other):
        m.close()


def test_load_on_another_env_of_the_same_spaces_and_refusals(tmp_path):
    model = TRPO(Corridor, n_envs=2, **FAST)
    model.learn(128)
    path = model.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="unregistered env.*pass it again"):
        TRPO.load(path)
    again = TRPO.load(path, env=Corridor(8))
    assert again.total_steps == model.total_steps and again.rollout_config.n_envs == 1
    for p, q in zip(_params(model), _params(again)):
        assert torch.equal(p, q)
    again.learn(64)  # trains on
    with pytest.raises(ValueError, match="observation_space is Box.*the checkpoint's"):
        TRPO.load(path, env="CartPole-v1")
    with pytest.raises(ValueError, match="holds a TRPO agent; load it with natgrad.rl.TRPO.load"):
        NPG.load(path, env=Corridor())
    with pytest.raises(ValueError, match="policy_hidden cannot change"):
        TRPO.load(path, env=Corridor(), policy_hidden=(8,))
    model.close()
    again.close()


def test_get_and_set_parameters_round_trip():
    a = TRPO("CartPole-v1", seed=1, use_preset=False, **FAST)
    b = TRPO("CartPole-v1", seed=2, use_preset=False, **FAST)
    a.learn(64)
    b.set_parameters(a.get_parameters())
    for p, q in zip(_params(a), _params(b)):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="params has keys \\['optimizer'\\]"):
        b.set_parameters({"optimizer": {}})
    a.close()
    b.close()


def test_an_sb3_script_runs_with_only_the_import_changed(tmp_path, monkeypatch):
    """examples/sb3_switch.py is SB3's quick-start with `from natgrad.rl import TRPO`."""
    from tests.helpers import load_script

    monkeypatch.chdir(tmp_path)
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    module = load_script(root / "examples" / "sb3_switch.py", "sb3_switch")
    mean = module.main(total_timesteps=2048)
    assert np.isfinite(mean)
    assert (tmp_path / "logs" / "evaluations.npz").exists()
    assert (tmp_path / "trpo_cartpole.pt").exists()
