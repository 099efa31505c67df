"""TRPO from Python: train, watch the KL and the line search, evaluate, save and reload.

python examples/trpo_api.py            # Pendulum-v1 preset, 100k steps (~1 min)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from natgrad.rl import TRPO


def main(steps: int = 100_000, env_id: str = "Pendulum-v1") -> float:
    agent = TRPO(env_id)  # the env's preset (see natgrad/presets/trpo.toml)
    print(
        f"{env_id}: {agent.rollout_config.n_envs} envs × {agent.config.n_steps} steps per iteration"
    )

    def report(locals_: dict, globals_: dict) -> None:  # SB3's function-callback signature
        m = locals_["metrics"]
        if agent.iteration % 10 == 0:
            print(
                f"iter {agent.iteration:3d}  steps {int(m['env_steps']):6d}  "
                f"return {m['episode_return']:8.1f}  KL {m['kl']:.4f}  "
                f"backtracks {int(m['line_search_steps'])}  CG {int(m['cg_iterations'])}"
            )

    agent.learn(steps, callback=report)
    returns = agent.evaluate(10)
    print(f"deterministic evaluation: {np.mean(returns):.1f} ± {np.std(returns):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = agent.save(Path(tmp) / "agent.pt")
        again = TRPO.load(path)
        obs = np.zeros(again.observation_space.shape, dtype=np.float32)
        assert np.array_equal(
            again.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0]
        )
        again.close()
    agent.close()
    return float(np.mean(returns))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
