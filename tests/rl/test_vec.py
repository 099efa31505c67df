"""Vector envs: SAME-STEP autoreset, sync/async equality, state transfer, gymnasium
adapter modes and error reporting from subprocesses."""

import os
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from natgrad.rl.envs import AsyncVecEnv, EnvFactory, GymVectorAdapter, SyncVecEnv


class FlakyEnv(gym.Env):
    """Counts steps; episodes end every 4 steps; fails at step ``fail_at`` of its life."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = spaces.Discrete(2)

    def __init__(self, fail_at=-1, how="raise"):
        self.fail_at, self.how, self.life = fail_at, how, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([self.np_random.random(), 0.0]), {}

    def step(self, action):
        self.t += 1
        self.life += 1
        if self.life == self.fail_at:
            if self.how == "exit":
                os._exit(3)
            raise ValueError(f"boom at step {self.life}")
        return np.array([float(self.t), float(action)]), 1.0, self.t % 4 == 0, False, {}


if "NatgradFlaky-v0" not in gym.registry:
    gym.register("NatgradFlaky-v0", entry_point=FlakyEnv)
FLAKY = f"{__name__}:NatgradFlaky-v0"  # the module prefix lets subprocesses register it too


def cartpole_fns(n, max_steps=8):
    f = EnvFactory("CartPole-v1", kwargs={"max_episode_steps": max_steps})
    return [f.bind(i, 0) for i in range(n)]


def assert_step_equal(a, b):
    for x, y in zip(a[:5], b[:5], strict=True):
        assert np.array_equal(x, y)


def test_same_step_autoreset_semantics():
    env = gym.make("CartPole-v1", max_episode_steps=8)  # reference single env
    venv = SyncVecEnv(cartpole_fns(1))
    assert venv.no_final.flags.writeable is False
    np.testing.assert_array_equal(venv.reset([5])[0], env.reset(seed=5)[0])
    ends = 0
    for _ in range(40):
        obs, rew, term, trunc, final, infos = venv.step(np.array([1]))
        o, r, te, tr, _ = env.step(1)
        assert (rew[0], term[0], trunc[0], infos) == (r, te, tr, None)
        if te or tr:
            ends += 1
            np.testing.assert_array_equal(final[0], o)  # true last obs
            np.testing.assert_array_equal(obs[0], env.reset()[0])  # already reset
        else:
            assert final is venv.no_final
            np.testing.assert_array_equal(obs[0], o)
    assert ends >= 3


def test_infos_on_request():
    venv = SyncVecEnv(cartpole_fns(2, max_steps=2), return_infos=True)
    venv.reset([0, 1])
    venv.step(np.array([0, 0]))
    infos = venv.step(np.array([0, 0]))[5]
    assert len(infos) == 2 and all("final_info" in i for i in infos)


def test_sync_async_identical_and_state_moves_between_backends():
    rng = np.random.default_rng(0)
    sync = SyncVecEnv(cartpole_fns(3))
    with AsyncVecEnv(cartpole_fns(3), n_workers=2) as avec:
        assert avec.observation_space == sync.observation_space
        np.testing.assert_array_equal(avec.reset([0, 1, 2]), sync.reset([0, 1, 2]))
        for _ in range(30):
            act = rng.integers(0, 2, 3)
            assert_step_equal(avec.step(act), sync.step(act))
        sync.set_state(avec.get_state())  # async -> sync, mid-episode
        for _ in range(30):
            act = rng.integers(0, 2, 3)
            assert_step_equal(avec.step(act), sync.step(act))
        avec.set_state(sync.get_state())  # and back
        for _ in range(10):
            act = rng.integers(0, 2, 3)
            assert_step_equal(avec.step(act), sync.step(act))
    with pytest.raises(ValueError, match="state holds 2 envs"):
        sync.set_state(sync.get_state()[:2])


@pytest.mark.parametrize("mode", ["SAME_STEP", "NEXT_STEP", "DISABLED"])
def test_gym_vector_adapter_matches_sync(mode):
    fns = cartpole_fns(3)
    ref = SyncVecEnv(fns)
    gvec = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode[mode])
    ad = GymVectorAdapter(gvec)
    assert ad.autoreset_mode.name == mode
    np.testing.assert_array_equal(ad.reset([0, 1, 2]), ref.reset([0, 1, 2]))
    rng = np.random.default_rng(1)
    ends = 0
    for t in range(60):
        act = rng.integers(0, 2, 3)
        a, b = ad.step(act), ref.step(act)
        assert_step_equal(a, b)
        ends += int((b[2] | b[3]).sum())
        if t == 30:  # state transfer keeps going bit-exactly
            ad.set_state(ref.get_state())
    assert ends >= 10  # many autoresets were exercised
    ad.close()


def test_adapter_state_needs_sync_vector_env():
    class Fake(gym.vector.VectorEnv):
        num_envs = 1
        single_observation_space = spaces.Box(-1, 1, (1,))
        single_action_space = spaces.Discrete(2)
        metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    with pytest.raises(NotImplementedError, match="SyncVectorEnv"):
        GymVectorAdapter(Fake()).get_state()


def test_env_error_in_sync_names_env():
    f = EnvFactory(FLAKY)
    venv = SyncVecEnv([f.bind(0, 0), EnvFactory(FLAKY, kwargs={"fail_at": 2}).bind(1, 0)])
    venv.reset()
    venv.step(np.array([0, 0]))
    with pytest.raises(RuntimeError, match=r"env 1 raised in step: ValueError: boom at step 2"):
        venv.step(np.array([0, 0]))


def test_env_error_in_subprocess_is_reported_quickly():
    fns = [EnvFactory(FLAKY).bind(0, 0), EnvFactory(FLAKY, kwargs={"fail_at": 3}).bind(1, 0)]
    venv = AsyncVecEnv(fns, n_workers=2, env_indices=[4, 5])
    venv.reset([0, 1])
    venv.step(np.array([0, 1]))
    venv.step(np.array([0, 1]))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"env 5 raised in step: ValueError: boom at step 3"):
        venv.step(np.array([0, 1]))
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(RuntimeError, match="closed"):
        venv.step(np.array([0, 1]))


def test_dead_worker_is_detected():
    fns = [EnvFactory(FLAKY, kwargs={"fail_at": 1, "how": "exit"}).bind(0, 0)]
    venv = AsyncVecEnv(fns, poll_interval=0.1)
    venv.reset()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"envs \(0,\) died"):
        venv.step(np.array([0]))
    assert time.monotonic() - t0 < 5.0


def test_unpicklable_env_fn_and_bad_arguments():
    with pytest.raises(ValueError, match="picklable"):
        AsyncVecEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="n_workers=3"):
        AsyncVecEnv(cartpole_fns(2), n_workers=3)
    with pytest.raises(ValueError, match="no envs"):
        SyncVecEnv([])
    with pytest.raises(ValueError, match="seeds has 1 entries"):
        SyncVecEnv(cartpole_fns(2)).reset([0])


def test_next_step_adapter_needs_partial_reset():
    class NoMask(gym.vector.SyncVectorEnv):
        def reset(self, *, seed=None, options=None):
            if options and "reset_mask" in options:
                raise TypeError("reset_mask not supported")
            return super().reset(seed=seed, options=options)

    ad = GymVectorAdapter(NoMask(cartpole_fns(1, max_steps=2)))
    ad.reset([0])
    ad.step(np.array([0]))
    with pytest.raises(RuntimeError, match="SAME_STEP instead"):
        ad.step(np.array([0]))
