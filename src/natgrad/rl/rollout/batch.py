"""What a rollout returns: :class:`RolloutBatch`, its episodes, and helpers over batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from natgrad.rl.rollout.normalize import ObsNormalizer, RewardScaler

__all__ = ["Episode", "RolloutBatch", "concat_batches", "update_stats"]


class Episode(NamedTuple):
    """A finished episode: global env index, undiscounted raw return, length, and the
    step ``t`` of the batch at which it ended (it may have started in earlier batches)."""

    env_index: int
    ret: float
    length: int
    step: int


@dataclass
class RolloutBatch:
    """``T`` steps of ``N`` envs, time-major numpy arrays (``D`` = flat obs size).

    Attributes:
        obs: ``(T, N, D)`` float32, observations as the policy saw them (encoded:
            Box flattened, Discrete one-hot; normalised with the rollout's frozen stats).
        actions: ``(T, N, *action_shape)`` as sampled: unclipped Box actions (float32),
            0-based indices (int64) for the discrete kinds.
        rewards: ``(T, N)`` float64, scaled if reward scaling is on, else raw.
        raw_rewards: ``(T, N)`` float64 env rewards.
        terminated: ``(T, N)`` bool, true terminal steps (no bootstrap).
        truncated: ``(T, N)`` bool, time-limit ends (bootstrap from ``V(final_obs)``).
        final_obs: ``(K, D)`` float32, normalised last observation of every episode that
            ended in this batch, ordered by ``(t, env column)``.
        final_index: ``(K, 2)`` int64, the ``(t, env column)`` of each ``final_obs`` row.
        last_obs: ``(N, D)`` float32, normalised observation after the last step (the
            next rollout starts there).
        episodes: Finished episodes, ordered by ``(step, env column)``.
        env_indices: ``(N,)`` int64, global env index of each column.
        raw_obs: ``(T, N, D)`` float64 unnormalised encoded obs (only with observation
            normalisation: the data for the statistics update), else ``None``.
        discounted_returns: ``(T, N)`` float64 per-env running discounted returns (only
            with reward scaling: the data for its update), else ``None``.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    raw_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    final_index: np.ndarray
    last_obs: np.ndarray
    episodes: list[Episode]
    env_indices: np.ndarray
    raw_obs: np.ndarray | None = None
    discounted_returns: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        """Number of time steps ``T``."""
        return int(self.obs.shape[0])

    @property
    def n_envs(self) -> int:
        """Number of envs ``N``."""
        return int(self.obs.shape[1])

    @property
    def dones(self) -> np.ndarray:
        """``terminated | truncated``, ``(T, N)`` bool."""
        return self.terminated | self.truncated

    def validate(self) -> None:
        """Check shapes and that observations and rewards are finite.

        Raises:
            ValueError: On inconsistent shapes.
            FloatingPointError: Naming the env (global index) and step of the first
                non-finite value.
        """
        T, N = self.obs.shape[:2]
        for name in ("rewards", "raw_rewards", "terminated", "truncated"):
            if getattr(self, name).shape != (T, N):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {(T, N)}")
        if self.actions.shape[:2] != (T, N) or self.final_obs.shape[0] != len(self.final_index):
            raise ValueError("actions or final_obs/final_index shapes do not match obs")
        finite = np.isfinite(self.final_obs).all(axis=1)
        bad_final = np.zeros((T, N), dtype=bool)
        bad_final[tuple(self.final_index[~finite].T)] = True
        for what, bad in (
            ("observation", ~np.isfinite(self.obs.reshape(T, N, -1)).all(axis=2)),
            ("reward", ~np.isfinite(self.rewards)),
            ("final observation", bad_final),
        ):
            if bad.any():
                t, i = np.argwhere(bad)[0]
                raise FloatingPointError(
                    f"non-finite {what} from env {int(self.env_indices[i])} at step {t} of "
                    "the rollout"
                )


def concat_batches(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """Concatenate batches of disjoint env subsets along the env axis (same ``T``).

    The result equals the batch a single collector over all those envs would produce
    (columns in the given order).

    Args:
        batches: Batches with equal ``n_steps``.

    Returns:
        The combined batch.
    """
    if not batches:
        raise ValueError("batches is empty")
    if len({b.n_steps for b in batches}) != 1:
        raise ValueError(f"batches have different n_steps: {[b.n_steps for b in batches]}")
    offsets = np.cumsum([0] + [b.n_envs for b in batches])[:-1]
    out: dict[str, Any] = {}
    for f in fields(RolloutBatch):
        vals = [getattr(b, f.name) for b in batches]
        if f.name in ("final_obs", "final_index", "episodes"):
            continue
        if any(v is None for v in vals):
            out[f.name] = None
        else:
            out[f.name] = np.concatenate(
                vals, axis=0 if f.name in ("last_obs", "env_indices") else 1
            )
    index = np.concatenate(
        [b.final_index + (0, off) for b, off in zip(batches, offsets, strict=True)]
    )
    order = np.lexsort((index[:, 1], index[:, 0]))
    out["final_index"] = index[order].astype(np.int64).reshape(-1, 2)
    out["final_obs"] = np.concatenate([b.final_obs for b in batches])[order]
    col = {int(e): c for c, e in enumerate(out["env_indices"])}
    eps = [e for b in batches for e in b.episodes]
    out["episodes"] = sorted(eps, key=lambda e: (e.step, col[e.env_index]))
    return RolloutBatch(**out)


def update_stats(
    obs_normalizer: ObsNormalizer | None, reward_scaler: RewardScaler | None, batch: RolloutBatch
) -> None:
    """Fold a whole batch into the normalisation statistics (each is skipped when None)."""
    if obs_normalizer is not None:
        if batch.raw_obs is None:
            raise ValueError("batch has no raw_obs; collect it with normalize_obs=True")
        obs_normalizer.update(batch.raw_obs)
    if reward_scaler is not None:
        if batch.discounted_returns is None:
            raise ValueError("batch has no discounted_returns; use normalize_reward=True")
        reward_scaler.update(batch.discounted_returns)
