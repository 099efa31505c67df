"""Saving and loading an agent: the one way to rebuild an agent from a checkpoint.

A checkpoint (written atomically by :func:`natgrad.utils.checkpoint.save_checkpoint`)
holds the configs, the spaces, where the env came from, the parameters, the optimiser
and random states, the env states and normalisers, and any custom actor or critic
module, serialised whole by cloudpickle (so a network class defined in a script loads
back elsewhere; ``custom_objects`` can supply it instead).

Loading with the saved env resumes bit for bit. Envs whose state does not pickle are
saved without it (one log line says so), and a loaded model starts fresh episodes. An
env that cannot be rebuilt here (an unregistered class, a wrapped env object) gives a
model without envs: it predicts, and trains once given one (``set_env``), as in SB3.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import gymnasium as gym
import torch

from natgrad.rl.config import PolicyConfig, RolloutConfig, split_fields
from natgrad.rl.envs.make import EnvFactory, EnvStateError
from natgrad.rl.envs.source import EnvSource, env_source
from natgrad.rl.rollout.detached import DetachedCollector
from natgrad.utils.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from natgrad.rl.algos.base import OnPolicyAlgorithm

__all__ = ["AGENT_FORMAT", "agent_state", "load", "load_agent_state", "save", "set_parameters"]

log = logging.getLogger("natgrad")

AGENT_FORMAT = 2
"""Layout of the agent state inside a checkpoint (1: natgrad 0.1's single AgentConfig)."""

SUFFIX = ".pt"
IGNORED_CUSTOM_OBJECTS = ("lr_schedule", "clip_range")
"""SB3's usual ``custom_objects`` keys that natgrad has no use for (no schedules)."""


def _blob(obj: Any) -> bytes | None:
    return None if obj is None else cloudpickle.dumps(obj)


def agent_state(agent: OnPolicyAlgorithm) -> dict[str, Any]:
    """Everything a bit-exact resume needs; refused while the state is undefined."""
    try:
        rollouts, env_states = agent.rollouts.state_dict(), True
    except EnvStateError as err:
        if not getattr(agent, "_warned_env_state", False):
            log.warning("natgrad: saving without the env states (%s); a loaded model "
                        "starts fresh episodes", err)  # fmt: skip
            agent._warned_env_state = True  # type: ignore[attr-defined]
        rollouts, env_states = agent.rollouts.state_dict(envs=False), False
    source = agent.env_source
    return {
        "agent_format": AGENT_FORMAT,
        "algo": agent.algo,
        "env_id": source.env_id if source.factory is not None else None,
        "env_spec": _blob(source.spec),
        "env": source.describe(),
        "env_kwargs": dict(source.env_kwargs),
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
        "modules": {
            name: _blob(getattr(agent.policy, name)) if custom else None
            for name, custom in agent.custom_modules.items()
        },
        "critic_optimizer": agent.critic_fitter.state_dict(),
        "generator": agent.generator.get_state(),
        "rollouts": rollouts,
        "env_states_saved": env_states,
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
    agent.rollouts.load_state_dict(
        state["rollouts"], envs=envs and state.get("env_states_saved", True)
    )
    norm = agent.collector.obs_normalizer
    if norm is not None:  # the configured clip wins over the saved one (a resume override)
        norm.clip = float(agent.config.clip_obs)
    agent.iteration = int(state["iteration"])
    agent.num_timesteps = int(state["step"])
    agent.total_steps = int(state["total_steps"])
    agent.recent_episodes = deque(
        [(float(r), int(n)) for r, n in state["recent_episodes"]], maxlen=100
    )


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


def _module(name: str, blob: bytes | None, supplied: Any, path: str | Path) -> Any:
    """A custom network: the one supplied (a module or a constructor), else the saved one."""
    if supplied is not None:
        module = supplied
        if callable(supplied) and not isinstance(supplied, torch.nn.Module):
            module = supplied()
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"custom_objects[{name!r}]={supplied!r} is neither an nn.Module "
                             "nor a constructor returning one")  # fmt: skip
        return module
    if blob is None:
        return None
    try:
        return cloudpickle.loads(blob)
    except Exception as err:
        raise ValueError(
            f"checkpoint {path}: its custom {name} cannot be rebuilt here ({type(err).__name__}: "
            f"{err}); pass the network: TRPO.load(path, custom_objects={{{name!r}: module or "
            "constructor}})"
        ) from None


def _saved_env(state: dict[str, Any]) -> Any:
    """What rebuilds the saved env here: its id, its spec, or ``None``."""
    if state["env_id"] is not None:
        return state["env_id"]
    if state.get("env_spec") is not None:
        try:
            spec = cloudpickle.loads(state["env_spec"])
            return EnvSource(env_id=spec.id, factory=EnvFactory(functools.partial(gym.make, spec)),
                             env_kwargs=dict(spec.kwargs), spec=spec)  # fmt: skip
        except Exception as err:
            log.warning("natgrad: the checkpoint's env (%s) cannot be rebuilt here (%s)",
                        state["env"], err)  # fmt: skip
    return None


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
    state = read(path)
    algo = state["algo"]
    if cls.algo and cls.algo != algo:
        other = cls.registry.get(algo)
        raise ValueError(
            f"checkpoint {path} holds a {algo.upper()} agent; load it with "
            f"natgrad.rl.{other.__name__ if other else algo.upper()}.load"
        )
    klass = cls if cls.algo else cls.registry.get(algo)
    if klass is None:
        raise ValueError(f"checkpoint {path} names an unknown algo {algo!r}")
    custom = dict(custom_objects or {})
    unknown = set(custom) - {"actor", "critic", "learning_rate", *IGNORED_CUSTOM_OBJECTS}
    if unknown:
        raise ValueError(
            f"custom_objects has keys {sorted(unknown)}; natgrad reads 'actor', 'critic' and "
            "'learning_rate' (the critic's)"
        )
    overrides = dict(overrides or {})
    for key in ("policy_kwargs", "net_arch", "activation_fn"):
        if key in overrides:
            raise ValueError(f"{key}: the networks cannot change when loading a checkpoint")
    if "learning_rate" in custom:
        overrides["critic_lr"] = float(custom["learning_rate"])
    parts = split_fields(overrides, algo, aliases=True)
    if parts["policy"] or parts["run"]:
        names = sorted({**parts["policy"], **parts["run"]})
        raise ValueError(f"{', '.join(names)} cannot change when loading a checkpoint")
    cfg = state["config"]
    algorithm = klass.config_class.from_dict({**cfg["algorithm"], **parts["algorithm"]})
    rollout = RolloutConfig.from_dict({**cfg["rollout"], **parts["rollout"]})
    modules = {k: _module(k, state["modules"][k], custom.get(k), path) for k in ("actor", "critic")}
    given_env = env is not None
    env_kwargs = None
    if env is None:
        env = _saved_env(state)
        env_kwargs = state.get("env_kwargs") or None if isinstance(env, str) else None
    if env is None:  # nothing to rebuild it from: a model that acts, as SB3's without env
        collector: Any = DetachedCollector(
            state["observation_space"], state["action_space"],
            normalize_obs=algorithm.normalize_obs, normalize_reward=algorithm.normalize_reward,
            clip_obs=algorithm.clip_obs, gamma=algorithm.gamma, description=state["env"],
        )  # fmt: skip
        env = EnvSource(env_id=None, label=f"{state['env']}, not rebuilt: pass env= to load")
        rollout = rollout.replace(n_envs=1, vec="sync", workers=0)
        log.info("natgrad: %s has no env that can be rebuilt here; the model can predict, "
                 "and trains after set_env(env)", path)  # fmt: skip
    else:
        collector = None
        if given_env and "n_envs" not in parts["rollout"]:
            rollout = rollout.replace(n_envs=env_source(env).fixed_n_envs or 1)
    agent = klass(
        env=env, config=algorithm, rollout=rollout, seed=int(state["seed"]), device=device,
        env_kwargs=env_kwargs, use_preset=False, collector=collector,
        policy_kwargs=PolicyConfig.from_dict(cfg["policy"]).to_dict(),
        actor=modules["actor"], critic=modules["critic"],
    )  # fmt: skip
    try:
        for name in ("observation_space", "action_space"):
            if getattr(agent, name) != state[name]:
                raise ValueError(
                    f"the env's {name} is {getattr(agent, name)}, the checkpoint's "
                    f"{state[name]}; pass an env with the spaces it was trained on"
                )
        same_envs = (
            not given_env
            and collector is None
            and agent.rollout_config.n_envs == int(cfg["rollout"]["n_envs"])
        )
        agent.load_state_dict(state, envs=same_envs)
    except (KeyError, RuntimeError, ValueError) as exc:
        agent.close()
        raise ValueError(f"checkpoint {path} does not fit ({exc}); nothing was changed") from None
    return agent


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
