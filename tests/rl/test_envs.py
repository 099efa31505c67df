"""Env ids, spaces, factories and mid-episode env serialisation."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from natgrad.rl.envs import (
    EnvFactory,
    check_env_id,
    check_spaces,
    dump_env,
    load_env,
    make_env,
)
from natgrad.rl.envs.spaces import ObsEncoder, action_to_env


def test_known_ids_pass():
    check_env_id("CartPole-v1")
    check_env_id("CartPole")  # unversioned resolves to the latest version


def test_unknown_id_lists_close_matches():
    with pytest.raises(
        ValueError, match=r"unknown env id 'CartPol-v1'; did you mean 'CartPole-v1'"
    ):
        check_env_id("CartPol-v1")
    with pytest.raises(ValueError, match="pprint_registry"):
        check_env_id("Qwxzy-v7")
    with pytest.raises(ValueError, match="unknown env id 'Hoper-v5'"):
        EnvFactory("Hoper-v5")


def test_unknown_module_prefix():
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod_xyz'"):
        check_env_id("no_such_mod_xyz:Foo-v0")


@pytest.mark.parametrize(
    ("obs", "act", "name"),
    [
        (spaces.Dict({"a": spaces.Discrete(2)}), spaces.Discrete(2), "Dict"),
        (spaces.Box(-1, 1, (2,)), spaces.Tuple((spaces.Discrete(2),)), "Tuple"),
        (spaces.Box(-1, 1, (2,)), spaces.MultiDiscrete([[2, 3], [2, 2]]), "MultiDiscrete"),
        (spaces.Box(-1, 1, (2,)), spaces.MultiBinary([2, 2]), "MultiBinary"),
    ],
)
def test_unsupported_spaces_are_named(obs, act, name):
    with pytest.raises(ValueError, match=f"unsupported .*{name}"):
        check_spaces(obs, act)


def test_supported_spaces():
    for act in (spaces.Box(-1, 1, (3,)), spaces.Discrete(3), spaces.MultiDiscrete([2, 3])):
        check_spaces(spaces.Box(-1, 1, (2, 2)), act)
    check_spaces(spaces.Discrete(5), spaces.MultiBinary(4))


def test_factory_is_picklable_and_seeds_spaces():
    f = EnvFactory("CartPole-v1", kwargs={"max_episode_steps": 7})
    g = pickle.loads(pickle.dumps(f))
    assert g == f
    a, b = g(3, 10), make_env("CartPole-v1", seed=10, index=3, max_episode_steps=7)
    assert a.spec.max_episode_steps == 7
    assert [a.action_space.sample() for _ in range(5)] == [
        b.action_space.sample() for _ in range(5)
    ]
    with pytest.raises(ValueError, match="env_id must be"):
        EnvFactory(42)


def test_factory_with_callable_and_wrappers():
    f = EnvFactory(
        gym.envs.classic_control.CartPoleEnv, wrappers=(gym.wrappers.RecordEpisodeStatistics,)
    )
    env = f.bind(0, 0)()
    assert isinstance(env, gym.wrappers.RecordEpisodeStatistics)


def _step_all(env, actions):
    out = []
    for a in actions:
        obs, r, te, tr, _ = env.step(a)
        out.append((obs.copy(), r, te, tr))
        if te or tr:
            out.append((env.reset()[0].copy(), 0.0, False, False))
    return out


def _assert_same(run_a, run_b):
    assert len(run_a) == len(run_b)
    for (oa, ra, ta, ua), (ob, rb, tb, ub) in zip(run_a, run_b, strict=True):
        assert np.array_equal(oa, ob) and ra == rb and ta == tb and ua == ub


def test_dump_load_cartpole_keeps_time_limit_and_rng():
    env = gym.make("CartPole-v1", max_episode_steps=15)
    env.reset(seed=1)
    for _ in range(9):
        env.step(0)
    clone = load_env(dump_env(env))
    actions = [i % 2 for i in range(80)]
    _assert_same(_step_all(env, actions), _step_all(clone, actions))


def test_dump_load_hopper_bit_identical_mid_episode():
    pytest.importorskip("mujoco")
    env = gym.make("Hopper-v5")
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 3).astype(np.float32))
    # plain pickle rebuilds a *fresh* Hopper (gymnasium's EzPickle); dump_env keeps its state
    qpos = env.unwrapped.data.qpos.copy()
    assert not np.array_equal(pickle.loads(pickle.dumps(env)).unwrapped.data.qpos, qpos)
    clone = load_env(dump_env(env))
    np.testing.assert_array_equal(clone.unwrapped.data.qpos, qpos)
    actions = [rng.uniform(-1, 1, 3).astype(np.float32) for _ in range(300)]
    _assert_same(_step_all(env, actions), _step_all(clone, actions))


def test_obs_encoder_box_and_one_hot():
    enc = ObsEncoder(spaces.Box(-1, 1, (2, 3)))
    assert enc.dim == 6 and enc(np.zeros((4, 2, 3))).shape == (4, 6)
    enc = ObsEncoder(spaces.Discrete(4, start=1))
    np.testing.assert_array_equal(enc(np.array([1, 4])), [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_action_to_env_clips_and_offsets():
    box = action_to_env(spaces.Box(-1.0, 1.0, (2,)))
    np.testing.assert_array_equal(box(np.array([[3.0, -0.5]], np.float32)), [[1.0, -0.5]])
    disc = action_to_env(spaces.Discrete(3, start=-1))
    np.testing.assert_array_equal(disc(np.array([0, 2])), [-1, 1])
    md = action_to_env(spaces.MultiDiscrete([2, 3], start=[1, 0]))
    np.testing.assert_array_equal(md(np.array([[0, 2]])), [[1, 2]])
    mb = action_to_env(spaces.MultiBinary(2))
    assert mb(np.array([[1, 0]])).dtype == np.int8
