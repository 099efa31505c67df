"""Periodic evaluation on a separate env: :class:`EvalCallback` and
:class:`StopTrainingOnRewardThreshold` (SB3's, with natgrad's frequencies in env steps)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from natgrad.rl.callbacks.base import BaseCallback, EventCallback
from natgrad.rl.envs.source import env_source
from natgrad.rl.policies.acting import evaluate
from natgrad.utils.checkpoint import atomic_write

__all__ = ["EvalCallback", "StopTrainingOnRewardThreshold"]


class EvalCallback(EventCallback):
    """Evaluate the policy every ``eval_freq`` env steps on ``eval_env``.

    Each evaluation runs ``n_eval_episodes`` episodes (episode ``k`` reset with seed
    ``seed + k``) with a frozen snapshot of the policy and of the observation
    normaliser; the training envs are never touched.

    Args:
        eval_env: An env, an env id or a zero-argument factory (``None``: a fresh copy of
            the training env).
        callback_on_new_best: Called when the mean return beats the best so far (e.g.
            :class:`StopTrainingOnRewardThreshold`).
        callback_after_eval: Called after every evaluation.
        n_eval_episodes: Episodes per evaluation.
        eval_freq: Evaluate when the model's env steps pass a multiple of this (SB3 counts
            steps per env; natgrad counts env steps, all envs together).
        log_path: A folder for ``evaluations.npz`` (``timesteps``, ``results``,
            ``ep_lengths``, as SB3 writes it).
        best_model_save_path: A folder for ``best_model.pt``.
        deterministic: Act with the mode of the policy.
        render: Must be ``False`` (accepted for SB3 compatibility).
        verbose: 1 prints each evaluation.
        warn: Accepted for SB3 compatibility (the spaces are always checked).
        seed: Seed of the first evaluation episode.

    Attributes:
        best_mean_reward, last_mean_reward: The best and the last mean return.
        evaluations_timesteps, evaluations_results, evaluations_length: The history.
    """

    def __init__(
        self,
        eval_env: Any = None,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10_000,
        log_path: str | os.PathLike[str] | None = None,
        best_model_save_path: str | os.PathLike[str] | None = None,
        deterministic: bool = True,
        render: bool = False,
        verbose: int = 1,
        warn: bool = True,
        seed: int = 10_000,
    ) -> None:
        super().__init__(callback_after_eval, verbose=verbose)
        if render:
            raise ValueError(
                "render=True is not supported: natgrad's evaluation does not render; record "
                "videos with gymnasium.wrappers.RecordVideo on the eval env instead"
            )
        for name, v in (("n_eval_episodes", n_eval_episodes), ("eval_freq", eval_freq)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an int >= 1")
        self.eval_env_arg = eval_env
        self.callback_on_new_best = callback_on_new_best
        if callback_on_new_best is not None:
            callback_on_new_best.parent = self
        self.n_eval_episodes, self.eval_freq = n_eval_episodes, eval_freq
        self.log_path = None if log_path is None else Path(log_path)
        self.best_model_save_path = (
            None if best_model_save_path is None else Path(best_model_save_path)
        )
        self.deterministic, self.seed = deterministic, seed
        self.best_mean_reward = -np.inf
        self.last_mean_reward = -np.inf
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self.evaluations_length: list[list[int]] = []
        self._env: Any = None
        self._last = 0

    def _init_callback(self) -> None:
        model = self._model
        if self._env is None:
            source = (
                model.env_source if self.eval_env_arg is None else env_source(self.eval_env_arg)
            )
            self._env = source.make_eval_env(self.seed)
        for name in ("observation_space", "action_space"):
            got, want = getattr(self._env, name), getattr(model, name)
            if got != want:
                raise ValueError(
                    f"eval_env's {name} {got} differs from the training env's {want}; "
                    "evaluate on the same task"
                )
        for folder in (self.log_path, self.best_model_save_path):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(model)

    def _on_training_start(self) -> None:
        super()._on_training_start()
        self._last = self.num_timesteps // self.eval_freq

    def _on_step(self) -> bool:
        k = self.num_timesteps // self.eval_freq
        if k <= self._last:
            return True
        self._last = k
        return self.evaluate_now()

    def evaluate_now(self) -> bool:
        """Run an evaluation now; returns whether training should go on."""
        model = self._model
        returns, lengths = evaluate(
            self._env, model.actor(), self.n_eval_episodes, self.seed,
            deterministic=self.deterministic, return_episode_lengths=True,
        )  # fmt: skip
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(returns.tolist())
        self.evaluations_length.append(lengths.tolist())
        if self.log_path is not None:
            self._write_npz(self.log_path / "evaluations.npz")
        mean, std = float(returns.mean()), float(returns.std())
        self.last_mean_reward = mean
        model.record("eval/mean_reward", mean)
        model.record("eval/mean_ep_length", float(lengths.mean()))
        if self.verbose:
            print(f"eval at {self.num_timesteps} steps: return {mean:.2f} ± {std:.2f}, "
                  f"length {lengths.mean():.1f}")  # fmt: skip
        go_on = True
        if mean > self.best_mean_reward:
            self.best_mean_reward = mean
            if self.best_model_save_path is not None:
                model.save(self.best_model_save_path / "best_model.pt")
            if self.callback_on_new_best is not None:
                go_on = self.callback_on_new_best.on_step()
        if self.callback is not None:
            go_on = self._on_event() and go_on
        return go_on

    def _write_npz(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(
            buf, timesteps=np.array(self.evaluations_timesteps),
            results=np.array(self.evaluations_results),
            ep_lengths=np.array(self.evaluations_length),
        )  # fmt: skip
        atomic_write(path, lambda f: f.write(buf.getvalue()), binary=True)

    def _on_training_end(self) -> None:
        pass  # the env stays open for the next learn() call; closed with the callback

    def __del__(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            try:
                env.close()
            except Exception:
                pass


class StopTrainingOnRewardThreshold(BaseCallback):
    """Stop training once an evaluation's mean return reaches ``reward_threshold``.

    Use it as :class:`EvalCallback`'s ``callback_on_new_best``.
    """

    def __init__(self, reward_threshold: float, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.reward_threshold = float(reward_threshold)

    def _on_step(self) -> bool:
        parent = self.parent
        if not isinstance(parent, EvalCallback):
            raise ValueError(
                "StopTrainingOnRewardThreshold must be EvalCallback's callback_on_new_best"
            )
        go_on = bool(parent.best_mean_reward < self.reward_threshold)
        if not go_on and self.verbose:
            print(f"stopping: mean return {parent.best_mean_reward:.2f} reached the "
                  f"threshold {self.reward_threshold:g}")  # fmt: skip
        return go_on
