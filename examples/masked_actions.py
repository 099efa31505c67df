"""Invalid-action masks: a maze where walking into a wall is illegal.

The agent starts in a corner of a 7×7 maze and must reach the far corner (+1, and
−0.01 a step, at most 60 steps). A move into a wall or off the grid is illegal: it ends
the episode with a penalty of −1. ``MaskedMaze`` says which moves are legal, through
``action_masks()`` (sb3-contrib's convention); ``Maze`` is the same env without it.

TRPO with masks never makes an illegal move and can explore the whole maze; without
them, most early episodes end at the first wall, and the policy must first learn where
the walls are:

    python examples/masked_actions.py               # 3 seeds × 30k steps, ~2 min
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from natgrad.rl import TRPO

LAYOUT = (
    ".......",
    ".#####.",
    ".#...#.",
    ".#.#.#.",
    "...#...",
    "####.#.",
    "......G",
)
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


class Maze(gym.Env):
    """The maze without masks: illegal moves end the episode with ``penalty``."""

    def __init__(self, penalty: float = -1.0, info_masks: bool = False, max_steps: int = 60):
        self.walls = np.array([[c == "#" for c in row] for row in LAYOUT])
        self.n = len(LAYOUT)
        self.goal = (self.n - 1, self.n - 1)
        self.penalty, self.info_masks, self.max_steps = penalty, info_masks, max_steps
        self.observation_space = spaces.Discrete(self.n * self.n)
        self.action_space = spaces.Discrete(4)
        self.illegal_moves = 0  # counted for the tests
        self.pos = (0, 0)
        self.t = 0

    def legal(self) -> np.ndarray:
        r, c = self.pos
        out = np.zeros(4, dtype=bool)
        for a, (dr, dc) in enumerate(MOVES):
            rr, cc = r + dr, c + dc
            out[a] = 0 <= rr < self.n and 0 <= cc < self.n and not self.walls[rr, cc]
        return out

    def _info(self) -> dict:
        return {"action_mask": self.legal()} if self.info_masks else {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos, self.t = (0, 0), 0
        return self.pos[0] * self.n + self.pos[1], self._info()

    def step(self, action):
        self.t += 1
        if not self.legal()[int(action)]:
            self.illegal_moves += 1
            return self.pos[0] * self.n + self.pos[1], self.penalty, True, False, self._info()
        dr, dc = MOVES[int(action)]
        self.pos = (self.pos[0] + dr, self.pos[1] + dc)
        done = self.pos == self.goal
        reward = 1.0 if done else -0.01
        obs = self.pos[0] * self.n + self.pos[1]
        return obs, reward, done, self.t >= self.max_steps and not done, self._info()


class MaskedMaze(Maze):
    """The same maze, telling its legal moves (sb3-contrib's ``action_masks()``)."""

    def action_masks(self) -> np.ndarray:
        return self.legal()


def train(env_cls: type, seed: int, steps: int) -> tuple[float, float]:
    """Train TRPO; returns (mean deterministic return over 10 episodes, the steps at which
    the training return first passed 0.5, or nan)."""
    agent = TRPO(env_cls, n_steps=512, seed=seed, use_preset=False, n_critic_updates=5)
    first = [float("nan")]

    def watch(locals_: dict, globals_: dict) -> bool:
        ret = agent.metrics["episode_return"]
        if np.isnan(first[0]) and ret > 0.5:
            first[0] = float(agent.num_timesteps)
        return True

    agent.learn(steps, callback=watch)
    score = float(np.mean(agent.evaluate(10)))
    agent.close()
    return score, first[0]


def main(steps: int = 30_000, seeds: int = 3) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"masked": [], "unmasked": []}
    for name, cls in (("masked", MaskedMaze), ("unmasked", Maze)):
        for seed in range(seeds):
            results[name].append(train(cls, seed, steps))
    for name, rows in results.items():
        scores = [s for s, _ in rows]
        reach = [f"{r:.0f}" if not np.isnan(r) else "never" for _, r in rows]
        print(f"{name:9s} return {np.mean(scores):5.2f} (per seed {', '.join(f'{s:.2f}' for s in scores)}); "
              f"training return > 0.5 first at steps: {', '.join(reach)}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
