"""Invalid-action masks: from the env, through the rollout and the update, to predict."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given
from hypothesis import strategies as st

from helpers import load_script
from natgrad.rl import TRPO
from natgrad.rl.envs.masks import check_masks
from natgrad.rl.policies.sampler import NumpyMLPSampler
from natgrad.rl.rollout.collector import LocalCollector

EXAMPLE = load_script(
    Path(__file__).resolve().parents[2] / "examples" / "masked_actions.py", "example_masked"
)


class HarshMaze(EXAMPLE.MaskedMaze):
    """Illegal moves end the episode with a large penalty."""

    def __init__(self) -> None:
        super().__init__(penalty=-100.0)


class InfoMaze(EXAMPLE.Maze):
    """Masks in ``info["action_mask"]`` (no method), same penalty."""

    def __init__(self) -> None:
        super().__init__(penalty=-100.0, info_masks=True)


class MultiMasked(gym.Env):
    """MultiDiscrete([3, 2]); sub-action 0 may never be 1, sub-action 1 alternates."""

    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.bad = 0, 0
        return np.zeros(2, dtype=np.float32), {}

    def action_masks(self):
        return [np.array([True, False, True]), np.array([self.t % 2 == 0, self.t % 2 == 1])]

    def step(self, action):
        m = self.action_masks()
        self.bad += int(not m[0][action[0]]) + int(not m[1][action[1]])
        self.t += 1
        return np.full(2, self.t % 2, dtype=np.float32), 0.0, False, self.t >= 10, {}


def _envs(model):
    return model.collector.venv.envs


@pytest.mark.parametrize("env_cls", [HarshMaze, InfoMaze])
def test_masked_env_is_never_sent_an_illegal_action(env_cls):
    model = TRPO(env_cls, n_steps=256, seed=0, use_preset=False, n_envs=1)
    model.learn(1024)
    assert model.metrics["line_search_success"] == 1.0 and np.isfinite(model.metrics["kl"])
    assert all(e.unwrapped.illegal_moves == 0 for e in _envs(model))
    rollout, _ = model.collect_rollout()
    assert rollout.action_masks is not None and rollout.action_masks.shape == (256, 1, 4)
    taken = np.take_along_axis(rollout.action_masks[:, 0], rollout.actions[:, 0, None], 1)
    assert taken.all()
    env = env_cls()
    returns = model.evaluate(3, env=env_cls)  # evaluation reads the masks too
    assert np.all(returns > -100)
    model.close()
    assert env.illegal_moves == 0


def test_multidiscrete_masks_per_sub_action():
    model = TRPO(MultiMasked, n_steps=64, seed=1, use_preset=False)
    model.learn(128)
    assert _envs(model)[0].unwrapped.bad == 0
    obs = np.zeros(2, dtype=np.float32)
    mask = np.array([False, True, False, True, False])
    for det in (True, False):
        assert model.predict(obs, deterministic=det, action_masks=mask)[0].tolist() == [1, 0]
    model.close()


def test_unmasked_env_has_no_masks_in_its_batch():
    with LocalCollector("CartPole-v1", 2, 0) as c:
        sampler = NumpyMLPSampler(torch.nn.Sequential(torch.nn.Linear(4, 2)), "categorical")
        assert c.collect(sampler, 8).action_masks is None


def test_predict_takes_masks_and_refuses_bad_ones():
    model = TRPO(EXAMPLE.MaskedMaze, n_steps=64, seed=0, use_preset=False)
    only = np.array([False, False, True, False])
    assert model.predict(0, deterministic=True, action_masks=only)[0] == 2
    batch = model.predict(np.array([0, 1]), action_masks=np.array([only, only[::-1]]))[0]
    assert batch.tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(4,\)"):
        model.predict(0, action_masks=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="dtype float64"):
        model.predict(0, action_masks=np.array([0.5, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="allows no action"):
        model.predict(0, action_masks=np.zeros(4, dtype=bool))
    model.close()


def test_check_masks_errors_name_the_problem():
    md = spaces.MultiDiscrete([2, 3])
    assert check_masks([[1, 0, 1, 1, 0]], md).dtype == bool  # ints 0/1 are fine
    with pytest.raises(ValueError, match=r"sub-action at logits 0\.\.1"):
        check_masks([[False, False, True, True, True]], md)
    with pytest.raises(ValueError, match="values other than 0/1"):
        check_masks([[2, 0, 1, 1, 0]], md)
    with pytest.raises(ValueError, match="Discrete or MultiDiscrete"):
        check_masks([[True]], spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="cannot be read"):
        check_masks([np.ones(2, bool), np.ones(3, bool)], spaces.Discrete(2))


class AllIllegal(EXAMPLE.MaskedMaze):
    def action_masks(self):
        return np.zeros(4, dtype=bool) if self.t >= 2 else self.legal()


class WrongShape(EXAMPLE.MaskedMaze):
    def action_masks(self):
        return np.ones(5, dtype=bool)


def test_env_masks_errors_are_clear():
    with pytest.raises(ValueError, match="allows no action"):
        TRPO(AllIllegal, n_steps=16, seed=0, use_preset=False).learn(16)
    with pytest.raises(ValueError, match=r"after reset.*shape \(5,\), expected \(4,\)"):
        TRPO(WrongShape, n_steps=16, seed=0, use_preset=False)


@given(
    logits=st.lists(st.floats(-5, 5), min_size=5, max_size=5),
    legal=st.lists(st.booleans(), min_size=5, max_size=5).filter(any),
    u=st.floats(0, 1, exclude_max=True),
)
def test_sampler_never_picks_a_masked_action(logits, legal, u):
    net = torch.nn.Sequential(torch.nn.Linear(1, 5))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor(logits))
    s = NumpyMLPSampler(net, "categorical")
    mask = np.array([legal])
    a = int(s.sample(np.zeros((1, 1), np.float32), np.array([[u]]), mask)[0])
    assert legal[a]
    assert legal[int(s.mode(np.zeros((1, 1), np.float32), mask)[0])]


@pytest.mark.parametrize("env_cls", [HarshMaze, InfoMaze])
def test_masks_from_a_gymnasium_vector_env(env_cls):
    venv = gym.vector.SyncVectorEnv([env_cls, env_cls])
    model = TRPO(venv, n_steps=64, seed=0, use_preset=False)
    model.learn(256)
    assert all(e.unwrapped.illegal_moves == 0 for e in venv.envs)
    model.close()
