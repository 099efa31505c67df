"""Using, saving and loading a model: SB3's methods, shared by TRPO and NPG.

:class:`ModelMethods` is mixed into :class:`~natgrad.rl.algos.base.OnPolicyAlgorithm`,
which holds the training; this file holds what a trained model does: act (``predict``,
``evaluate``), change its envs (``get_env``, ``set_env``), and persist (``save``,
``load``, ``get_parameters``, ``set_parameters``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch

from natgrad.rl.algos import persistence
from natgrad.rl.algos.critic_fitter import CriticFitter
from natgrad.rl.config import AlgoConfig, RolloutConfig
from natgrad.rl.envs.source import EnvSource
from natgrad.rl.policies.acting import Actor, evaluate
from natgrad.rl.policies.actor_critic import ActorCritic
from natgrad.rl.rollout.ahead import RolloutQueue
from natgrad.rl.rollout.collector import Collector

if TYPE_CHECKING:
    from natgrad.rl.algos.base import OnPolicyAlgorithm

__all__ = ["ModelMethods"]


class ModelMethods:
    """Acting, envs and persistence of an on-policy model (see the module docstring)."""

    # set by OnPolicyAlgorithm.__init__
    policy: ActorCritic
    config: AlgoConfig
    rollout_config: RolloutConfig
    collector: Collector
    critic_fitter: CriticFitter
    rollouts: RolloutQueue
    env_source: EnvSource
    observation_space: gym.Space
    action_space: gym.Space
    seed: int
    total_steps: int

    def _model(self) -> OnPolicyAlgorithm:
        return cast("OnPolicyAlgorithm", self)

    # --- acting ---------------------------------------------------------------------------
    def actor(self) -> Actor:
        """A frozen snapshot of the policy that maps raw observations to env actions."""
        return Actor(
            self.policy.sampler(), self.observation_space, self.action_space,
            self.collector.obs_normalizer,
        )  # fmt: skip

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        action_masks: Any = None,
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``: env-ready actions for one observation or a batch; with
        ``action_masks`` (one bool per logit and observation, True = legal: sb3-contrib's
        ``MaskablePPO.predict``) only legal actions are chosen.

        Returns:
            ``(actions, state)``; the policy has no recurrent state, so ``state`` comes
            back as given.

        Raises:
            ValueError: For an observation of the wrong shape (naming the expected one) or
                with a non-finite entry; a mask of the wrong shape or dtype, or with no
                legal action.
        """
        actor = self.actor()
        return actor(observation, deterministic=deterministic, action_masks=action_masks), state

    def evaluate(
        self, episodes: int = 10, seed: int = 10_000, env: Any = None, deterministic: bool = True
    ) -> np.ndarray:
        """Returns of ``episodes`` episodes (episode ``k`` reset with ``seed + k``) on a fresh
        env (or ``env``: an env, id or factory), never the training envs."""
        from natgrad.rl.envs.source import env_source

        source = self.env_source if env is None else env_source(env)
        eval_env = source.make_eval_env(seed)
        try:
            return evaluate(eval_env, self.actor(), episodes, seed, deterministic=deterministic)
        finally:
            if eval_env is not source.env:
                eval_env.close()

    # --- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs (see :mod:`~natgrad.rl.algos.persistence`)."""
        return persistence.agent_state(self._model())

    def load_state_dict(self, state: dict[str, Any], *, envs: bool = True) -> None:
        """Restore :meth:`state_dict` (``envs=False`` keeps the current envs)."""
        persistence.load_agent_state(self._model(), state, envs=envs)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (temp file, fsync, rename)."""
        return persistence.save(self._model(), path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: Any = None,
        device: str | torch.device = "cpu",
        custom_objects: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> OnPolicyAlgorithm:
        """Rebuild an agent from a checkpoint written by :meth:`save`.

        Args:
            path: The checkpoint.
            env: ``None`` rebuilds the saved env id and resumes bit for bit; an env (of the
                same spaces) trains or acts on it instead, from fresh episodes.
            device: ``"cpu"``.
            custom_objects: ``{"actor": module, "critic": module}`` to use instead of the
                saved custom networks (e.g. when their class cannot be imported here).
            **overrides: Settings to change (any algorithm, policy-free rollout field).
        """
        return persistence.load(cast("type[OnPolicyAlgorithm]", cls), path, env=env, device=device,
                                custom_objects=custom_objects, overrides=overrides)  # fmt: skip

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """SB3's ``get_parameters``: ``{"policy": ..., "critic.optimizer": ...}`` state dicts."""
        return {
            "policy": self.policy.state_dict(),
            "critic.optimizer": self.critic_fitter.state_dict(),
        }

    def set_parameters(
        self,
        params: Mapping[str, Any] | str | Path,
        exact_match: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        """SB3's ``set_parameters``: load :meth:`get_parameters` (or a checkpoint's file)."""
        if str(device) not in ("cpu", "auto"):
            raise ValueError(f"device={device!r}: natgrad's RL runs on the CPU; pass 'cpu'")
        persistence.set_parameters(self._model(), params, exact_match=exact_match)

    def get_env(self) -> Any:
        """The training envs: natgrad's vector env (SB3 returns its ``VecEnv``)."""
        return getattr(self.collector, "venv", None)

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        """Train on ``env`` (an id, env, factory or vector env of the same spaces) from now
        on, from fresh episodes; the normalisation statistics carry over."""
        from natgrad.rl.envs.source import env_source

        source = env_source(env)
        n_envs = source.fixed_n_envs or self.rollout_config.n_envs
        ro, cfg = self.rollout_config.replace(n_envs=n_envs, workers=0), self.config
        if ro.vec != "sync" and source.fixed_n_envs is not None:
            ro = ro.replace(vec="sync")
        new = self._model()._make_collector(source, ro)
        for name in ("observation_space", "action_space"):
            if getattr(new, name) != getattr(self, name):
                new.close()
                raise ValueError(
                    f"env's {name} {getattr(new, name)} differs from the model's "
                    f"{getattr(self, name)}; set_env needs an env of the same spaces"
                )
        for name in ("obs_normalizer", "reward_scaler"):
            old_obj, new_obj = getattr(self.collector, name), getattr(new, name)
            if old_obj is not None and new_obj is not None:
                new_obj.load_state_dict(old_obj.state_dict())
        self.collector.close()
        self.collector, self.env_source, self.rollout_config = new, source, ro
        self.rollouts = RolloutQueue(new, cfg.n_steps)

    def close(self) -> None:
        """Stop the envs, workers and helper processes."""
        self.critic_fitter.close()
        self.collector.close()

    def __enter__(self) -> OnPolicyAlgorithm:
        return self._model()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def env_steps(self) -> int:
        """Env steps since construction (counting resumed runs' earlier steps)."""
        return self.total_steps

    @property
    def env_id(self) -> str | None:
        return self.env_source.env_id
