"""Stable-Baselines3's quick-start, with natgrad: only the two import lines differ.

    python examples/sb3_switch.py

The SB3 version of this script imports ``from sb3_contrib import TRPO`` and
``from stable_baselines3.common.callbacks import EvalCallback``; everything below the
imports is SB3's code, unchanged (see docs/from-sb3.md for what differs underneath).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from natgrad.rl import TRPO  # SB3: from sb3_contrib import TRPO
from natgrad.rl.callbacks import EvalCallback  # SB3: from stable_baselines3.common.callbacks


def main(total_timesteps: int = 20_000) -> float:
    env = gym.make("CartPole-v1")
    model = TRPO("MlpPolicy", env, verbose=0)

    eval_env = gym.make("CartPole-v1")
    eval_callback = EvalCallback(
        eval_env,
        best_model_save_path="./logs/",
        log_path="./logs/",
        eval_freq=500,
        deterministic=True,
        render=False,
    )
    model.learn(total_timesteps=total_timesteps, callback=eval_callback)
    model.save("trpo_cartpole")

    del model  # remove to demonstrate saving and loading
    model = TRPO.load("trpo_cartpole")

    obs, _ = env.reset(seed=0)
    returns, ret = [], 0.0
    for _ in range(1000):
        action, _states = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        ret += float(reward)
        if terminated or truncated:
            returns.append(ret)
            ret = 0.0
            obs, _ = env.reset()
    model.close()
    mean = float(np.mean(returns)) if returns else ret
    print(f"mean return over {len(returns)} episodes: {mean:.1f}")
    return mean


if __name__ == "__main__":
    main()
