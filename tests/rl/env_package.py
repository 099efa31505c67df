"""An env package for the CLI tests: ``register()`` adds an id, as ``minatar.gym`` does."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Lights(gym.Env):
    """Two lights, one lit; pressing the lit one pays 1. The other button is masked."""

    observation_space = spaces.Box(0, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.lit = 0, int(self.np_random.integers(2))
        return np.eye(2, dtype=np.float32)[self.lit], {}

    def action_masks(self):
        return np.eye(2, dtype=bool)[self.lit]

    def step(self, action):
        assert int(action) == self.lit, "an illegal action was sent"
        self.t += 1
        self.lit = int(self.np_random.integers(2))
        return np.eye(2, dtype=np.float32)[self.lit], 1.0, False, self.t >= 10, {}


def register() -> None:
    gym.register("NatgradTest/Lights-v0", entry_point=f"{__name__}:Lights")
