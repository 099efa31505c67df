"""Saving and loading an agent: the one way to rebuild an agent from a checkpoint.

A checkpoint (written atomically by :func:`natgrad.utils.checkpoint.save_checkpoint`)
holds the configs, the spaces, the env id, the parameters, the optimiser and random
states, the env states and normalisers, and any custom actor or critic module itself
(pickled whole, so a custom network loads back; ``custom_objects`` can supply it
instead). Loading with the saved env resumes bit for bit; loading with another env of
the same spaces keeps everything but the env states.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from natgrad.rl.config import RolloutConfig, split_fields
from natgrad.utils.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from natgrad.rl.algos.base import OnPolicyAlgorithm

__all__ = ["AGENT_FORMAT", "agent_state", "load", "load_agent_state", "save", "set_parameters"]

AGENT_FORMAT = 2
"""Layout of the agent state inside a checkpoint (1: natgrad 0.1's single AgentConfig)."""


def agent_state(agent: OnPolicyAlgorithm) -> dict[str, Any]:
    """Everything a bit-exact resume needs; refused while the state is undefined."""
    modules = {
        name: getattr(agent.policy, name) if custom else None
        for name, custom in agent.custom_modules.items()
    }
    return {
        "agent_format": AGENT_FORMAT,
        "algo": agent.algo,
        "env_id": agent.env_source.env_id,
        "env": agent.env_source.describe(),
        "env_kwargs": dict(agent.env_source.env_kwargs),
        "observation_space": agent.observation_space,
        "action_space": agent.action_space,
        "seed": agent.seed,
        "config": {
            "algorithm": agent.config.to_dict(),
            "policy": agent.policy_config.to_dict(),
            "rollout": agent.rollout_config.to_dict(),
        },
        "step": agent.num_timesteps,
        "total_steps": agent.total_steps,
        "iteration": agent.iteration,
        "policy": agent.policy.state_dict(),
        "modules": modules,
        "critic_optimizer": agent.critic_fitter.state_dict(),
        "generator": agent.generator.get_state(),
        "rollouts": agent.rollouts.state_dict(),
        "recent_episodes": list(agent.recent_episodes),
        "kfac": None if agent.kfac is None else agent.kfac.state_dict(),
    }


def load_agent_state(agent: OnPolicyAlgorithm, state: dict[str, Any], *, envs: bool) -> None:
    """Restore :func:`agent_state` into ``agent`` (``envs=False``: keep its envs)."""
    agent.policy.load_state_dict(state["policy"])
    agent.critic_fitter.load_state_dict(state["critic_optimizer"])
    agent.generator.set_state(state["generator"])
    if agent.kfac is not None:
        agent.kfac.load_state_dict(state["kfac"])
    agent.rollouts.load_state_dict(state["rollouts"], envs=envs)
    norm = agent.collector.obs_normalizer
    if norm is not None:  # the configured clip wins over the saved one (a resume override)
        norm.clip = float(agent.config.clip_obs)
    agent.iteration = int(state["iteration"])
    agent.num_timesteps = int(state["step"])
    agent.total_steps = int(state["total_steps"])
    agent.recent_episodes = deque(
        [(float(r), int(n)) for r, n in state["recent_episodes"]], maxlen=100
    )


SUFFIX = ".pt"


def save(agent: OnPolicyAlgorithm, path: str | Path) -> Path:
    """Write ``agent``'s checkpoint atomically (temp file, fsync, rename); a path without
    a suffix gets ``.pt`` (as SB3's ``save`` adds ``.zip``)."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(SUFFIX)
    return save_checkpoint(agent_state(agent), path)


def read(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file (an agent's, of this layout); ``path`` may omit
    the ``.pt`` that :func:`save` added."""
    path = Path(path)
    if not path.exists() and not path.suffix and path.with_suffix(SUFFIX).exists():
        path = path.with_suffix(SUFFIX)
    state = load_checkpoint(path, required=("algo", "config", "policy"))
    if state.get("agent_format") != AGENT_FORMAT:
        raise ValueError(
            f"checkpoint {path} was written by an older natgrad (agent format "
            f"{state.get('agent_format', 1)}, this one reads {AGENT_FORMAT}); retrain, or "
            "load it with the natgrad version that wrote it"
        )
    return state


def load(
    cls: type[OnPolicyAlgorithm],
    path: str | Path,
    *,
    env: Any = None,
    device: str | torch.device = "cpu",
    custom_objects: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> OnPolicyAlgorithm:
    """Rebuild an agent from ``path`` (see :meth:`OnPolicyAlgorithm.load`)."""
    from natgrad.rl.algos import ALGORITHMS

    state = read(path)
    algo = state["algo"]
    if algo not in ALGORITHMS:
        raise ValueError(f"checkpoint {path} names an unknown algo {algo!r}")
    klass = ALGORITHMS[algo]
    if cls.algo and klass is not cls:
        raise ValueError(
            f"checkpoint {path} holds a {algo.upper()} agent; load it with "
            f"natgrad.rl.{klass.__name__}.load"
        )
    custom = dict(custom_objects or {})
    unknown = set(custom) - {"actor", "critic"}
    if unknown:
        raise ValueError(
            f"custom_objects has keys {sorted(unknown)}; natgrad reads 'actor' and 'critic'"
        )
    modules = {k: custom.get(k, m) for k, m in state["modules"].items()}
    parts = split_fields(dict(overrides or {}), algo, aliases=True)
    if parts["policy"] or parts["run"]:
        names = sorted({**parts["policy"], **parts["run"]})
        raise ValueError(f"{', '.join(names)} cannot change when loading a checkpoint")
    cfg = state["config"]
    algorithm = klass.config_class.from_dict({**cfg["algorithm"], **parts["algorithm"]})
    rollout = RolloutConfig.from_dict({**cfg["rollout"], **parts["rollout"]})
    if env is None:
        if state["env_id"] is None:
            raise ValueError(
                f"checkpoint {path} was trained on an unregistered env ({state['env']}); "
                "pass it again: load(path, env=...)"
            )
        env = state["env_id"]
        env_kwargs = state.get("env_kwargs") or None
    else:
        env_kwargs = None
        if "n_envs" not in parts["rollout"]:
            rollout = rollout.replace(n_envs=RolloutConfig().n_envs)
    from natgrad.rl.config import PolicyConfig

    agent = klass(
        env=env, config=algorithm, rollout=rollout, seed=int(state["seed"]), device=device,
        env_kwargs=env_kwargs, use_preset=False,
        policy_kwargs=PolicyConfig.from_dict(cfg["policy"]).to_dict(),
        actor=_module(modules["actor"]), critic=_module(modules["critic"]),
    )  # fmt: skip
    try:
        for name in ("observation_space", "action_space"):
            if getattr(agent, name) != state[name]:
                raise ValueError(
                    f"the env's {name} is {getattr(agent, name)}, the checkpoint's "
                    f"{state[name]}; pass an env with the spaces it was trained on"
                )
        same_envs = env == state["env_id"] and agent.rollout_config.n_envs == int(
            cfg["rollout"]["n_envs"]
        )
        agent.load_state_dict(state, envs=same_envs)
    except (KeyError, RuntimeError, ValueError) as exc:
        agent.close()
        raise ValueError(f"checkpoint {path} does not fit ({exc}); nothing was changed") from None
    return agent


def _module(obj: Any) -> Any:
    """A saved module, or one built from a saved/supplied constructor."""
    if obj is None or isinstance(obj, torch.nn.Module):
        return obj
    if callable(obj):
        return obj()
    raise ValueError(f"custom_objects entry {obj!r} is neither an nn.Module nor a constructor")


def set_parameters(
    agent: OnPolicyAlgorithm, params: Mapping[str, Any] | str | Path, *, exact_match: bool
) -> None:
    """Load :meth:`~OnPolicyAlgorithm.get_parameters` (or a checkpoint file's) into ``agent``."""
    if isinstance(params, (str, Path)):
        state = read(params)
        params = {"policy": state["policy"], "critic.optimizer": state["critic_optimizer"]}
    unknown = set(params) - {"policy", "critic.optimizer"}
    if unknown:
        raise ValueError(
            f"params has keys {sorted(unknown)}; expected 'policy', 'critic.optimizer'"
        )
    if exact_match and "policy" not in params:
        raise ValueError("params lacks 'policy' (pass exact_match=False to load a part)")
    if "policy" in params:
        agent.policy.load_state_dict(params["policy"], strict=exact_match)
    if "critic.optimizer" in params:
        agent.critic_fitter.load_state_dict(params["critic.optimizer"])
