"""TRPO and NPG agents: collect a batch, estimate advantages, take the natural step, fit the critic.

    agent = TRPO("Hopper-v5")                 # the preset for Hopper-v5
    agent.learn(1_000_000, callback=print)    # callback(agent, metrics) -> False stops
    action = agent.predict(obs, deterministic=True)
    agent.save("hopper.pt"); agent = TRPO.load("hopper.pt")

Everything an iteration depends on (parameters, optimiser, random states, env
states, normalisers, episode statistics) is in :meth:`state_dict`, so a run
resumed from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from natgrad.rl.config import AgentConfig, NPGConfig, TRPOConfig
from natgrad.rl.critic import MLPCriticTrainer, fit_critic_autograd, supports_fast_path
from natgrad.rl.critic_worker import CriticWorker, PendingFit
from natgrad.rl.envs import check_env_id
from natgrad.rl.evaluate import Actor, evaluate
from natgrad.rl.gae import compute_next_values, gae
from natgrad.rl.policies import ActorCritic
from natgrad.rl.presets import preset_for
from natgrad.rl.rollout import Collector, LocalCollector, RolloutBatch
from natgrad.rl.update import Batch, explained_variance, make_kfac, policy_step
from natgrad.utils.checkpoint import load_checkpoint, save_checkpoint

Callback = Callable[["Agent", dict[str, float]], bool | None]


class RolloutError(RuntimeError):
    """The environment produced data that cannot be trained on (NaN/inf), at a named iteration."""


def make_collector(cfg: AgentConfig) -> Collector:
    """The rollout backend named by ``cfg.vec``."""
    kwargs: dict[str, Any] = dict(
        normalize_obs=cfg.normalize_obs, normalize_reward=cfg.normalize_reward, gamma=cfg.gamma
    )
    if cfg.vec == "ray":
        try:
            from natgrad.rl.ray_backend import RayCollector
        except ImportError as exc:
            raise ValueError(
                f"vec='ray' needs Ray: install it with `pip install natgrad[ray]` ({exc})"
            ) from None
        return RayCollector(  # type: ignore[return-value]
            cfg.env_id, cfg.n_envs, cfg.seed, workers=cfg.workers or None,
            address=cfg.ray_address or None, **kwargs,
        )  # fmt: skip
    vec_kwargs = {"n_workers": cfg.workers} if cfg.vec == "async" and cfg.workers else None
    return LocalCollector(
        cfg.env_id, cfg.n_envs, cfg.seed, vec=cfg.vec, vec_kwargs=vec_kwargs, **kwargs
    )


class Agent:
    """Shared machinery of :class:`TRPO` and :class:`NPG`.

    Args:
        env: A Gymnasium id; with no ``config`` the env's preset is used.
        config: The full configuration (its ``env_id`` must match ``env`` if both are given).
        actor, critic: Optional custom modules (see :class:`ActorCritic`).
        collector: Optional rollout backend (defaults to the one ``config.vec`` names).
    """

    config_class: type[AgentConfig] = AgentConfig

    def __init__(
        self,
        env: str | None = None,
        config: AgentConfig | None = None,
        *,
        actor: nn.Module | None = None,
        critic: nn.Module | None = None,
        collector: Collector | None = None,
    ) -> None:
        cfg = self._resolve_config(env, config)
        self.config = cfg
        torch.set_num_threads(cfg.threads)
        self.collector = collector if collector is not None else make_collector(cfg)
        obs_dim = int(self.collector.obs_dim)  # type: ignore[attr-defined]
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.policy = ActorCritic(
                obs_dim, self.collector.action_space,
                policy_hidden=cfg.policy_hidden, critic_hidden=cfg.critic_hidden,
                activation=cfg.activation, ortho_init=cfg.ortho_init,
                log_std_init=cfg.log_std_init, actor=actor, critic=critic,
            )  # fmt: skip
        self.critic_trainer: MLPCriticTrainer | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self.critic_worker: CriticWorker | None = None
        if supports_fast_path(self.policy.critic):
            self.critic_trainer = MLPCriticTrainer(self.policy.critic, lr=cfg.critic_lr)  # type: ignore[arg-type]
            actor_ids = {id(p) for p in self.policy.policy_parameters()}
            shared = any(id(p) in actor_ids for p in self.policy.critic_parameters())
            if cfg.critic_worker and (os.cpu_count() or 1) >= 2 and not shared:
                self.critic_worker = CriticWorker(self.critic_trainer)
        else:
            self.critic_optimizer = torch.optim.Adam(
                self.policy.critic_parameters(), lr=cfg.critic_lr, foreach=True
            )
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.kfac = make_kfac(self.policy, cfg)
        self.iteration = 0
        self.env_steps = 0
        self.recent_episodes: deque[tuple[float, int]] = deque(maxlen=100)
        self._pending: tuple[RolloutBatch, float] | None = None  # a prefetched batch
        self._prefetch_error: Exception | None = None

    # --- construction ---------------------------------------------------------------
    def _resolve_config(self, env: str | None, config: AgentConfig | None) -> AgentConfig:
        cls = self.config_class
        if config is None:
            if env is None:
                raise ValueError("give an env id (e.g. 'CartPole-v1') or a config")
            check_env_id(env)
            values, _ = preset_for(env)
            return cls.from_dict({**values, "env_id": env})
        if not isinstance(config, cls):
            raise ValueError(
                f"config is a {type(config).__name__}; {type(self).__name__} needs a {cls.__name__}"
            )
        if env is not None and env != config.env_id:
            raise ValueError(f"env={env!r} differs from config.env_id={config.env_id!r}")
        check_env_id(config.env_id)
        return config

    # --- one iteration --------------------------------------------------------------
    def train_iteration(self, prefetch: bool = False) -> dict[str, float]:
        """Collect one batch and update the policy and the critic; return the metrics.

        With ``prefetch`` (and a critic helper process), the *next* iteration's batch is
        collected with the updated policy while the critic's regression finishes in
        the helper; the next call starts from it.  Nothing the next iteration computes
        depends on the order, so results are unchanged (the pending batch is part of
        :meth:`state_dict`, so a resumed run stays bit-exact).
        """
        cfg = self.config
        t0 = time.perf_counter()
        if self._prefetch_error is not None:  # the batch collected ahead failed
            raise self._prefetch_error
        if self._pending is not None:
            rollout, rollout_seconds = self._pending
            self._pending = None
        else:
            rollout = self._collect(self.iteration + 1)
            rollout_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        batch = self._make_batch(rollout)
        # The critic's regression and the policy step depend only on the batch: with a
        # helper process they run at the same time (critic_worker.py).
        critic_fit = self._fit_critic(batch)
        prefetch_seconds = 0.0
        try:
            info, stats = policy_step(self.policy, batch, cfg, self.generator, self.kfac)
            self.iteration += 1
            self.env_steps += rollout.n_steps * rollout.n_envs
            for ep in rollout.episodes:
                self.recent_episodes.append((float(ep.ret), int(ep.length)))
            if prefetch and self.critic_worker is not None:
                prefetch_seconds = self._prefetch()
        finally:
            value_loss = critic_fit.result()
        stats["value_loss"] = value_loss
        update_seconds = time.perf_counter() - t1 - prefetch_seconds
        rets = [r for r, _ in self.recent_episodes]
        lens = [n for _, n in self.recent_episodes]
        stats.update(
            iteration=float(self.iteration),
            env_steps=float(self.env_steps),
            episode_return=float(np.mean(rets)) if rets else float("nan"),
            episode_length=float(np.mean(lens)) if lens else float("nan"),
            episodes=float(len(rollout.episodes)),
            explained_variance=explained_variance(batch.values, batch.returns),
            rollout_seconds=rollout_seconds,
            update_seconds=update_seconds,
            steps_per_second=rollout.n_steps
            * rollout.n_envs
            / max(rollout_seconds + update_seconds, 1e-9),
        )
        return stats

    def _prefetch(self) -> float:
        """Collect the next iteration's batch now; returns the seconds it took.

        An error is kept and raised when that iteration starts (the envs are then in an
        undefined state, so :meth:`state_dict` refuses); an interrupt is kept the same
        way and propagates at once.
        """
        t = time.perf_counter()
        try:
            self._pending = (self._collect(self.iteration + 1), time.perf_counter() - t)
        except Exception as exc:
            self._prefetch_error = exc
        except BaseException as exc:
            self._prefetch_error = RolloutError(
                f"iteration {self.iteration + 1}: collecting its batch ahead was interrupted "
                f"({type(exc).__name__})"
            )
            raise
        return time.perf_counter() - t

    def _collect(self, iteration: int) -> RolloutBatch:
        try:
            return self.collector.collect(self.policy.sampler(), self.config.n_steps)
        except FloatingPointError as exc:
            raise RolloutError(f"iteration {iteration}: {exc}") from None

    def _fit_critic(self, batch: Batch) -> PendingFit:
        """Start regressing the critic on the λ-returns; ``result()`` of the returned
        object is the mean minibatch loss.  With a helper process the fit runs there
        from now on; otherwise it runs when ``result()`` is called (after the policy
        step), the minibatch order having been drawn now in either case."""
        cfg = self.config
        epochs, size, gen = cfg.n_critic_updates, cfg.batch_size, self.generator
        obs, returns = batch.obs, batch.returns
        if self.critic_worker is not None:
            return self.critic_worker.fit_async(
                obs, returns, epochs=epochs, batch_size=size, generator=gen
            )
        if self.critic_trainer is not None:
            fit = self.critic_trainer.fit_later
            return PendingFit(
                compute=fit(obs, returns, epochs=epochs, batch_size=size, generator=gen)
            )
        critic, opt = self.policy.critic, self.critic_optimizer
        assert opt is not None  # one of the two is set in __init__
        return PendingFit(
            compute=lambda: fit_critic_autograd(
                critic, opt, obs, returns, epochs=epochs, batch_size=size, generator=gen
            )
        )

    def _critic_state(self) -> dict[str, Any]:
        opt = self.critic_trainer if self.critic_trainer is not None else self.critic_optimizer
        return opt.state_dict()  # type: ignore[union-attr]

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
        )

    def learn(self, total_steps: int | None = None, callback: Callback | None = None) -> Agent:
        """Train until ``env_steps`` reaches ``total_steps`` (default ``config.total_steps``).

        ``callback(agent, metrics)`` runs after every iteration; returning ``False`` stops.
        """
        target = self.config.total_steps if total_steps is None else int(total_steps)
        if target < 1:
            raise ValueError(f"total_steps={total_steps!r} must be >= 1")
        while self.env_steps < target:
            metrics = self.train_iteration(
                prefetch=self.env_steps + self.config.batch_steps < target
            )
            if callback is not None and callback(self, metrics) is False:
                break
        return self

    # --- acting ---------------------------------------------------------------------
    def actor(self) -> Actor:
        """A frozen snapshot of the policy that maps raw observations to env actions."""
        c = self.collector
        return Actor(self.policy.sampler(), c.observation_space, c.action_space, c.obs_normalizer)

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Env-ready actions for one raw observation or a batch of them."""
        return self.actor()(obs, deterministic=deterministic)

    def evaluate(self, episodes: int | None = None, seed: int = 10_000) -> np.ndarray:
        """Returns of deterministic episodes on a fresh env (``config.eval_episodes`` by default)."""
        n = self.config.eval_episodes if episodes is None else episodes
        return evaluate(self.config.env_id, self.actor(), n, seed)

    # --- persistence ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.critic_worker is not None and self.critic_worker.poisoned is not None:
            raise RuntimeError(f"cannot save: {self.critic_worker.poisoned}")
        if self._prefetch_error is not None:
            raise RolloutError(
                f"cannot save: the next batch, collected ahead, failed ({self._prefetch_error}); "
                "the envs are in an undefined state, so resume from an earlier checkpoint"
            )
        return {
            "algo": self.config.algo,  # type: ignore[attr-defined]
            "env_id": self.config.env_id,
            "config": self.config.to_dict(),
            "step": self.env_steps,
            "iteration": self.iteration,
            "obs_dim": int(self.collector.obs_dim),  # type: ignore[attr-defined]
            "action_space": repr(self.collector.action_space),
            "policy": self.policy.state_dict(),
            "critic_optimizer": self._critic_state(),
            "generator": self.generator.get_state(),
            "collector": self.collector.state_dict(),
            "recent_episodes": list(self.recent_episodes),
            "kfac": None if self.kfac is None else self.kfac.state_dict(),
            "pending_rollout": self._pending,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        opt = self.critic_trainer if self.critic_trainer is not None else self.critic_optimizer
        opt.load_state_dict(state["critic_optimizer"])  # type: ignore[union-attr]
        self.generator.set_state(state["generator"])
        if self.kfac is not None:
            self.kfac.load_state_dict(state["kfac"])
        self.collector.load_state_dict(state["collector"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["step"])
        self.recent_episodes = deque(
            [(float(r), int(n)) for r, n in state["recent_episodes"]], maxlen=100
        )
        self._pending = state.get("pending_rollout")  # used as is, even if n_steps changed
        self._prefetch_error = None

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (temp file, fsync, rename)."""
        return save_checkpoint(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, *, inference: bool = False, **overrides: Any) -> Agent:
        """Rebuild an agent from a checkpoint.

        Args:
            path: A file written by :meth:`save`.
            inference: Restore only what acting needs (the policy and the observation
                normaliser), so that ``overrides`` may change ``n_envs`` or ``vec``.
            **overrides: Config fields to change.
        """
        state = load_checkpoint(path, required=("algo", "config", "policy", "collector"))
        algo = state["algo"]
        if algo not in AGENTS:
            raise ValueError(f"checkpoint {path} names an unknown algo {algo!r}")
        if cls is not Agent and AGENTS[algo] is not cls:
            raise ValueError(
                f"checkpoint {path} holds a {algo!r} agent; load it with "
                f"natgrad.rl.{AGENTS[algo].__name__}.load"
            )
        klass = AGENTS[algo]
        cfg = klass.config_class.from_dict({**state["config"], **overrides})
        agent = klass(config=cfg)
        try:
            if inference:
                agent.policy.load_state_dict(state["policy"])
                norm = state["collector"].get("obs_normalizer")
                if norm is not None and agent.collector.obs_normalizer is not None:
                    agent.collector.obs_normalizer.load_state_dict(norm)
                agent.env_steps = int(state["step"])
            else:
                agent.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            agent.close()
            raise ValueError(
                f"checkpoint {path} does not fit its config ({exc}); nothing was changed"
            ) from None
        return agent

    def close(self) -> None:
        if self.critic_worker is not None:
            self.critic_worker.close()
        self.collector.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TRPO(Agent):
    """Trust Region Policy Optimisation with a line-searched, KL-checked natural step."""

    config_class = TRPOConfig


class NPG(Agent):
    """Natural Policy Gradient: the natural step of fixed KL radius, without line search."""

    config_class = NPGConfig


AGENTS: dict[str, type[Agent]] = {"trpo": TRPO, "npg": NPG}
