"""Small misbehaving environments for the agent and CLI tests.

Registered under ids with this module's prefix (``rl.bad_envs:...``) so that
subprocesses import and register them too.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class NaNEnv(gym.Env):
    """CartPole-like dummy whose observation turns NaN at step ``nan_at`` of its life."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, nan_at=300, what="obs"):
        self.nan_at, self.what, self.life = nan_at, what, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        self.life += 1
        obs = self.np_random.standard_normal(3).astype(np.float32)
        reward = float(action)
        if self.life >= self.nan_at:
            if self.what == "obs":
                obs[0] = np.nan
            else:
                reward = float("inf")
        return obs, reward, self.t >= 20, False, {}


class RaisingEnv(NaNEnv):
    """Raises inside ``step`` at step ``nan_at`` of its life."""

    def step(self, action):
        if self.life + 1 >= self.nan_at:
            raise RuntimeError("simulator crashed")
        return super().step(action)


class HangingEnv(NaNEnv):
    """``step`` never returns (sleeps an hour) from step ``nan_at`` of its life on."""

    def step(self, action):
        if self.life + 1 >= self.nan_at:
            import time

            time.sleep(3600)
        return super().step(action)


class DictActionEnv(NaNEnv):
    action_space = spaces.Dict({"a": spaces.Discrete(2)})


for name, cls in [
    ("NaN", NaNEnv),
    ("Raising", RaisingEnv),
    ("Hanging", HangingEnv),
    ("DictAction", DictActionEnv),
]:
    env_id = f"Natgrad{name}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=cls)

NAN_ENV = f"{__name__}:NatgradNaN-v0"
RAISING_ENV = f"{__name__}:NatgradRaising-v0"
HANGING_ENV = f"{__name__}:NatgradHanging-v0"
DICT_ACTION_ENV = f"{__name__}:NatgradDictAction-v0"
