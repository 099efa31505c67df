"""Learning runs: seeded, judged by a deterministic evaluation."""

import numpy as np
import pytest

from natgrad.rl.agent import TRPO


def test_cartpole_reaches_475_within_100k_steps():
    """The CartPole-v1 preset (about 20 s here) solves the task within 100k steps."""
    agent = TRPO("CartPole-v1")
    assert agent.config.total_steps == 100_000
    agent.learn()
    returns = agent.evaluate(10)
    agent.close()
    assert agent.env_steps <= 100_000 + agent.config.batch_steps
    assert np.mean(returns) >= 475, returns


@pytest.mark.slow
def test_inverted_pendulum_reaches_1000_within_100k_steps():
    agent = TRPO("InvertedPendulum-v5")
    agent.learn()
    returns = agent.evaluate(10)
    agent.close()
    assert np.mean(returns) >= 1000 - 1e-9, returns


@pytest.mark.slow
def test_pendulum_beats_minus_175_within_100k_steps():
    agent = TRPO("Pendulum-v1")
    agent.learn()
    returns = agent.evaluate(10)
    agent.close()
    assert np.mean(returns) >= -175, returns
