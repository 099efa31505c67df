"""Learning runs: seeded, judged by a deterministic evaluation."""

import numpy as np
import pytest

from natgrad.rl import TRPO


def test_cartpole_reaches_475_within_100k_steps():
    """The CartPole-v1 preset (about 10 s here) solves the task within 100k steps."""
    agent = TRPO("CartPole-v1")
    assert agent.preset_run["total_steps"] == 100_000
    agent.learn(100_000)
    returns = agent.evaluate(10)
    agent.close()
    assert agent.num_timesteps == 100_352  # the last iteration of 1,024 steps overshoots
    assert np.mean(returns) >= 475, returns


@pytest.mark.slow
def test_inverted_pendulum_reaches_1000_within_100k_steps():
    agent = TRPO("InvertedPendulum-v5")
    agent.learn(100_000)
    returns = agent.evaluate(10)
    agent.close()
    assert np.mean(returns) >= 1000 - 1e-9, returns


@pytest.mark.slow
def test_pendulum_learns_to_swing_up_within_100k_steps():
    """Median of 3 seeds above -200 (a random policy scores about -1,200).

    The benchmark's target (-175 over 5 seeds) is measured by bench/learning.py; one
    seed in five can stall, so this test uses the median of three.
    """
    means = []
    for seed in range(3):
        agent = TRPO("Pendulum-v1", seed=seed)
        agent.learn(100_000)
        means.append(float(np.mean(agent.evaluate(10))))
        agent.close()
    assert np.median(means) >= -200, means
