"""The on-policy algorithm both TRPO and NPG are: construction, the one learn loop, acting.

One iteration, in order::

    collect a batch (envs → RolloutBatch) → values, GAE → start the critic's fit
    → the policy step (the subclass's, in the order of its paper) → finish the critic's fit

:meth:`OnPolicyAlgorithm.learn` repeats it and runs the callbacks around it; it is the
only training loop (``natgrad train`` builds callbacks and calls it). Everything an
iteration depends on (parameters, optimiser, random states, env states, normalisers,
episode statistics, a batch collected ahead) is in :meth:`state_dict`, so a run resumed
from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from natgrad.linalg import NaturalDirection, StepInfo, natural_direction
from natgrad.rl.algos.arguments import resolve_arguments
from natgrad.rl.algos.critic_fitter import CriticFitter
from natgrad.rl.algos.model import ModelMethods
from natgrad.rl.algos.step import (
    Batch,
    Surrogate,
    explained_variance,
    fisher_operator,
    kfac_direction,
    make_kfac,
)
from natgrad.rl.callbacks.base import BaseCallback
from natgrad.rl.callbacks.compose import make_callback
from natgrad.rl.config import AlgoConfig, RolloutConfig
from natgrad.rl.envs.source import EnvSource
from natgrad.rl.policies.actor_critic import ActorCritic
from natgrad.rl.rollout.ahead import RolloutQueue
from natgrad.rl.rollout.backends import make_collector
from natgrad.rl.rollout.batch import RolloutBatch
from natgrad.rl.rollout.collector import Collector
from natgrad.rl.rollout.gae import compute_next_values, gae

__all__ = ["OnPolicyAlgorithm"]

log = logging.getLogger("natgrad")


class OnPolicyAlgorithm(ModelMethods):
    """Shared machinery of :class:`~natgrad.rl.TRPO` and :class:`~natgrad.rl.NPG`.

    Args:
        policy: SB3's policy name (``"MlpPolicy"``, ``"CnnPolicy"``,
            ``"MultiInputPolicy"``), or the env itself (then leave ``env`` out).
        env: An env id (``"Hopper-v5"``, ``"my_pkg.envs:MyEnv-v0"``), a
            ``gymnasium.Env``, a zero-argument factory or a ``gymnasium.vector.VectorEnv``.
        config: The algorithm's settings (:class:`~natgrad.rl.TRPOConfig` or
            :class:`~natgrad.rl.NPGConfig`); an env id's preset otherwise.
        policy_kwargs: SB3-style network settings: ``net_arch``, ``activation_fn``,
            ``log_std_init``, ``ortho_init``.
        rollout: Where and how fast to collect (:class:`~natgrad.rl.RolloutConfig`).
        seed: Seeds envs, action noise, initialisation and minibatches (``None``: drawn).
        verbose: 1 logs a line per iteration (and notes such as a custom network's path).
        device: ``"cpu"`` (or ``"auto"``, which is the CPU: the MLPs TRPO uses are
            fastest there).
        tensorboard_log: A folder for TensorBoard event files (one run per learn call).
        env_kwargs: Keyword arguments for ``gymnasium.make`` or the env factory.
        actor: A custom network ``obs -> mean or logits`` (replaces the default MLP).
        critic: A custom network ``obs -> value`` (replaces the default MLP).
        collector: A ready rollout backend (replaces the one ``rollout`` names).
        use_preset: Apply the env id's preset from ``natgrad/presets/trpo.toml``.
        **hyperparameters: Any field of the algorithm, policy or rollout config, or
            sb3-contrib's name for it (``learning_rate``, ``target_kl``, ...).
    """

    config_class: type[AlgoConfig] = AlgoConfig
    algo = ""
    registry: dict[str, type[OnPolicyAlgorithm]] = {}
    """Every algorithm by its ``algo`` name (subclasses register themselves), so a
    checkpoint names the class that loads it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "algo" in cls.__dict__ and cls.algo:  # the class that defines the algorithm,
            OnPolicyAlgorithm.registry[cls.algo] = cls  # not a user's subclass of it

    def __init__(
        self,
        policy: Any = None,
        env: Any = None,
        *,
        config: AlgoConfig | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        rollout: RolloutConfig | None = None,
        seed: int | None = 0,
        verbose: int = 0,
        device: str | torch.device = "cpu",
        tensorboard_log: str | Path | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        actor: nn.Module | None = None,
        critic: nn.Module | None = None,
        collector: Collector | None = None,
        use_preset: bool = True,
        **hyperparameters: Any,
    ) -> None:
        if str(device) not in ("cpu", "auto"):
            raise ValueError(
                f"device={device!r}: natgrad's RL runs on the CPU (its MLPs are fastest "
                "there; rollouts are numpy); pass device='cpu'"
            )
        if verbose and not log.handlers and not logging.getLogger().hasHandlers():
            handler = logging.StreamHandler()  # the user has configured no logging: say it
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        r = resolve_arguments(
            self.algo, policy, env, config=config, policy_kwargs=policy_kwargs,
            rollout=rollout, seed=seed, env_kwargs=env_kwargs, use_preset=use_preset,
            hyperparameters=hyperparameters,
        )  # fmt: skip
        self.env_source, self.seed, self.verbose = r.source, r.seed, verbose
        self.config, self.policy_config, self.rollout_config = r.algorithm, r.policy, r.rollout
        self.preset_source, self.preset_run = r.preset_source, r.preset_run
        self.tensorboard_log = tensorboard_log
        self.collector = (
            collector
            if collector is not None
            else self._make_collector(self.env_source, self.rollout_config)
        )
        try:
            self._build(actor, critic)
        except BaseException:
            self.collector.close()
            raise

    def _make_collector(self, source: EnvSource, ro: RolloutConfig) -> Collector:
        """The rollout backend ``ro`` names, over ``source``'s envs."""
        cfg = self.config
        return make_collector(
            source, n_envs=ro.n_envs, seed=self.seed, vec=ro.vec, workers=ro.workers,
            ray_address=ro.ray_address, step_timeout=ro.step_timeout,
            normalize_obs=cfg.normalize_obs, normalize_reward=cfg.normalize_reward,
            clip_obs=cfg.clip_obs, gamma=cfg.gamma,
        )  # fmt: skip

    def _build(self, actor: nn.Module | None, critic: nn.Module | None) -> None:
        cfg = self.config
        self.observation_space = self.collector.observation_space
        self.action_space = self.collector.action_space
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.policy = ActorCritic.from_config(
                int(self.collector.obs_dim), self.action_space, self.policy_config,  # type: ignore[attr-defined]
                actor=actor, critic=critic, fast_paths=cfg.fast_paths,
                observation_space=self.observation_space,
            )  # fmt: skip
        self.custom_modules = {"actor": actor is not None, "critic": critic is not None}
        self.critic_fitter = CriticFitter(
            self.policy, cfg.critic_lr, epochs=cfg.n_critic_updates,
            batch_size=cfg.batch_size, helper=self.rollout_config.critic_worker,
        )  # fmt: skip
        self.rollouts = RolloutQueue(self.collector, cfg.n_steps)
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.kfac = make_kfac(self.policy, cfg, self.seed)
        self.iteration = 0
        self.num_timesteps = 0  # SB3's name; learn(reset_num_timesteps=True) zeroes it
        self.total_steps = 0  # env steps since construction, never reset
        self.recent_episodes: deque[tuple[float, int]] = deque(maxlen=100)
        self.metrics: dict[str, float] = {}

    # --- the policy step: each algorithm's own --------------------------------------------
    def policy_step(self, batch: Batch) -> tuple[StepInfo, dict[str, float]]:
        """The natural policy step on ``batch``; subclasses implement it."""
        raise NotImplementedError

    def natural_direction(self, problem: Surrogate) -> NaturalDirection:
        """Fisher products → CG → ``x ≈ F⁻¹g``, scaled so that ``½ xᵀFx = max_kl``; or, with
        ``fisher="kfac"``, K-FAC's direct solve, scaled the same way (ACKTR)."""
        cfg = self.config
        if self.kfac is not None:
            return kfac_direction(self.policy, self.kfac, problem.grads, problem.grad, cfg)
        fisher = fisher_operator(
            self.policy, problem.dist, problem.obs, cfg, self.generator, problem.masks
        )
        return natural_direction(
            fisher.mv, problem.grad, cfg.max_kl, cg_iters=cfg.cg_iters, cg_rtol=cfg.cg_rtol,
            cg_atol=cfg.cg_atol,
        )  # fmt: skip

    # --- one iteration ------------------------------------------------------------------
    def collect_rollout(self) -> tuple[RolloutBatch, float]:
        """The batch of the next iteration (collected now, or earlier, ahead of time)."""
        return self.rollouts.next(self.policy.sampler(), self.iteration + 1)

    def update(self, rollout: RolloutBatch, rollout_seconds: float, *, ahead: bool) -> dict:
        """Update the policy and the critic on ``rollout``; returns the iteration's metrics.

        With ``ahead`` (and a critic helper process) the next batch is collected with the
        updated policy while the helper finishes the critic; results are unchanged.
        """
        t1 = time.perf_counter()
        batch = self._make_batch(rollout)
        critic_fit = self.critic_fitter.start(batch.obs, batch.returns, self.generator)
        ahead_seconds = 0.0
        try:
            _, stats = self.policy_step(batch)
            self.iteration += 1
            n = rollout.n_steps * rollout.n_envs
            self.num_timesteps += n
            self.total_steps += n
            for ep in rollout.episodes:
                self.recent_episodes.append((float(ep.ret), int(ep.length)))
            if ahead and self.critic_fitter.worker is not None:
                ahead_seconds = self.rollouts.collect_ahead(
                    self.policy.sampler(), self.iteration + 1
                )
        finally:
            value_loss = critic_fit.result()
        update_seconds = time.perf_counter() - t1 - ahead_seconds
        rets = [r for r, _ in self.recent_episodes]
        lens = [n for _, n in self.recent_episodes]
        stats.update(
            value_loss=value_loss,
            iteration=float(self.iteration),
            env_steps=float(self.num_timesteps),
            episode_return=float(np.mean(rets)) if rets else float("nan"),
            episode_length=float(np.mean(lens)) if lens else float("nan"),
            episodes=float(len(rollout.episodes)),
            explained_variance=explained_variance(batch.values, batch.returns),
            rollout_seconds=rollout_seconds,
            update_seconds=update_seconds,
            steps_per_second=n / max(rollout_seconds + update_seconds, 1e-9),
        )
        return stats

    def train_iteration(self, ahead: bool = False) -> dict[str, float]:
        """One iteration outside :meth:`learn` (no callbacks): collect, then update."""
        with torch_threads(self.rollout_config.threads):
            rollout, rollout_seconds = self.collect_rollout()
            self.metrics = self.update(rollout, rollout_seconds, ahead=ahead)
        return self.metrics

    def _make_batch(self, rollout: RolloutBatch) -> Batch:
        cfg = self.config
        values, next_values = compute_next_values(self.policy.value, rollout)
        term = torch.from_numpy(rollout.terminated)
        adv, ret = gae(
            torch.from_numpy(rollout.rewards).float(), values, next_values,
            term, term | torch.from_numpy(rollout.truncated), cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        T, N = rollout.rewards.shape
        flat = T * N
        return Batch(
            obs=torch.from_numpy(rollout.obs.reshape(flat, -1)),
            actions=self.policy.actions_to_tensor(
                rollout.actions.reshape(flat, *rollout.actions.shape[2:])
            ),
            advantages=adv.reshape(flat).float(),
            returns=ret.reshape(flat).float(),
            values=values.reshape(flat).float(),
            action_masks=None if rollout.action_masks is None
            else torch.from_numpy(rollout.action_masks.reshape(flat, -1)),
        )  # fmt: skip

    # --- the loop -------------------------------------------------------------------------
    def learn(
        self,
        total_timesteps: float | None = None,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
        *,
        total_steps: float | None = None,
    ) -> OnPolicyAlgorithm:
        """Train for ``total_timesteps`` more env steps (all envs together); SB3's meaning.

        Args:
            total_timesteps: Env steps to add (``total_steps`` is an alias). The last
                iteration may overshoot: iterations hold ``n_steps × n_envs`` steps.
            callback: A :class:`~natgrad.rl.callbacks.BaseCallback`, a list of them, or a
                function ``fn(locals_, globals_) -> bool`` (``False`` stops). Callbacks
                run once per iteration (``on_step``), not once per env step as in SB3.
            log_interval: With ``verbose``, log every this many iterations.
            tb_log_name: Name of the TensorBoard run under ``tensorboard_log``.
            reset_num_timesteps: Zero :attr:`num_timesteps` first (the envs and every
                other state carry on, so two ``learn(n)`` calls train ``2n`` steps).
            progress_bar: Show a tqdm progress bar.

        Returns:
            ``self``.
        """
        n = _budget(total_timesteps, total_steps)
        if reset_num_timesteps:
            self.num_timesteps = 0
        target = self.num_timesteps + n
        cb = make_callback(
            callback, progress_bar=progress_bar, verbose=self.verbose, log_interval=log_interval,
            tensorboard_log=self.tensorboard_log, tb_log_name=tb_log_name or self.algo.upper(),
            continue_run=not reset_num_timesteps,
        )  # fmt: skip
        with torch_threads(self.rollout_config.threads):
            self._learn(cb, target)
        return self

    def _learn(self, cb: BaseCallback, target: int) -> None:
        cb.init_callback(self)
        cb.on_training_start(locals(), globals(), total_timesteps=target)
        try:
            while self.num_timesteps < target:
                cb.on_rollout_start()
                rollout, rollout_seconds = self.collect_rollout()
                cb.update_locals({"rollout": rollout})
                cb.on_rollout_end()
                ahead = self.num_timesteps + self.config.n_steps * rollout.n_envs < target
                self.metrics = self.update(rollout, rollout_seconds, ahead=ahead)
                cb.update_locals({"metrics": self.metrics})
                if cb.on_step() is False:
                    break
        except BaseException as exc:  # callbacks see it (a checkpoint is not written then)
            cb.update_locals({"exception": exc})
            cb.on_training_end()
            raise
        cb.on_training_end()

    def record(self, key: str, value: float) -> None:
        """Add a metric to the current iteration's row (logged by the logger callbacks)."""
        self.metrics[key] = float(value)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's and numpy's BLAS thread counts set to ``n`` inside, restored after (both
    are global state).

    numpy's BLAS matters for the rollout: the CNN sampler's per-step ``(1, 600) @ (600,
    1024)`` product took 8 ms with OpenBLAS's default threads on a busy 2-core machine,
    against 0.15 ms on one thread (MinAtar SpaceInvaders, ``bench/minatar_trpo.py``).
    """
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def _budget(total_timesteps: float | None, total_steps: float | None) -> int:
    if total_timesteps is not None and total_steps is not None:
        raise ValueError("give total_timesteps or its alias total_steps, not both")
    n = total_timesteps if total_timesteps is not None else total_steps
    if n is None:
        raise ValueError("learn() needs total_timesteps, e.g. model.learn(100_000)")
    if isinstance(n, float) and n.is_integer():  # SB3 accepts learn(1e5)
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"total_timesteps={n!r} must be an int >= 1")
    return int(n)
