"""What ``TRPO(...)`` / ``NPG(...)`` accept, resolved into an env source and four configs.

Accepted forms (SB3's and natgrad's):

* ``TRPO("Hopper-v5")``: an env id; its preset applies (``use_preset=False`` to skip);
* ``TRPO("MlpPolicy", env, ...)``: SB3's positional policy name, then the env;
* ``TRPO(env=my_env, n_steps=1024, policy_kwargs=dict(net_arch=[32, 32]))``;
* ``TRPO(my_env, config=TRPOConfig(...), rollout=RolloutConfig(n_envs=8))``.

Keyword hyperparameters are any field of the algorithm, policy or rollout config (or
sb3-contrib's names: ``learning_rate``, ``target_kl``, ``cg_max_steps``, ...); they
override the preset and the ``config``/``rollout`` objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from natgrad.rl.config import (
    ALGO_CONFIGS,
    AlgoConfig,
    PolicyConfig,
    RolloutConfig,
    concern_classes,
    split_fields,
)
from natgrad.rl.envs.source import EnvSource, env_source
from natgrad.rl.presets import preset_for

__all__ = ["POLICY_NAMES", "Resolved", "resolve_arguments"]

SB3_NO_OPS: dict[str, Any] = {
    "stats_window_size": 100,
    "rollout_buffer_class": None,
    "rollout_buffer_kwargs": None,
    "_init_setup_model": True,
}
"""sb3-contrib arguments accepted at the value that changes nothing here (natgrad keeps
the last 100 episodes, builds its own rollouts)."""

POLICY_NAMES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")
"""SB3's policy names. natgrad picks the networks from the spaces, so all three resolve
to the same actor-critic; the name is accepted for compatibility."""


@dataclass
class Resolved:
    """The outcome of :func:`resolve_arguments`."""

    source: EnvSource
    algorithm: AlgoConfig
    policy: PolicyConfig
    rollout: RolloutConfig
    seed: int
    preset_source: str
    preset_run: dict[str, Any]  # the preset's run settings (total_steps, ...)


def resolve_arguments(
    algo: str,
    policy: Any,
    env: Any,
    *,
    config: AlgoConfig | None,
    policy_kwargs: Mapping[str, Any] | None,
    rollout: RolloutConfig | None,
    seed: int | None,
    env_kwargs: Mapping[str, Any] | None,
    use_preset: bool,
    hyperparameters: Mapping[str, Any],
) -> Resolved:
    """Resolve the constructor's arguments (see the module docstring).

    Raises:
        ValueError: Naming the argument, its value and what to pass instead.
    """
    cls = ALGO_CONFIGS[algo]
    if isinstance(policy, str) and policy in POLICY_NAMES:
        pass  # SB3's positional policy name; the env comes next
    elif policy is not None:
        if env is not None:
            raise ValueError(
                f"policy={policy!r}: the first argument is either an SB3 policy name "
                f"({', '.join(POLICY_NAMES)}) followed by the env, or the env itself"
            )
        env = policy
    if env is None:
        raise ValueError(
            f"no env given; pass one, e.g. {algo.upper()}('CartPole-v1') or "
            f"{algo.upper()}('MlpPolicy', gymnasium.make('CartPole-v1'))"
        )
    if config is not None and not isinstance(config, cls):
        raise ValueError(
            f"config is a {type(config).__name__}; {algo.upper()} needs a {cls.__name__} "
            "(pass hyperparameters as keywords, or the matching config class)"
        )
    if rollout is not None and not isinstance(rollout, RolloutConfig):
        raise ValueError(f"rollout is a {type(rollout).__name__}; pass a RolloutConfig")
    package = hyperparameters.get("env_package", rollout.env_package if rollout else "")
    if not isinstance(package, str):
        raise ValueError(f"env_package={package!r} must be a string, e.g. 'ale_py'")
    wrapper = hyperparameters.get("env_wrapper", rollout.env_wrapper if rollout else "")
    source = env_source(env, env_kwargs, packages=package, wrapper=wrapper)

    preset: dict[str, Any] = {}
    preset_source = ""
    if use_preset and isinstance(env, str) and config is None:
        preset, preset_source = preset_for(source.env_id or env, algo)
    parts = split_fields(preset, algo)
    given = split_fields(_drop_no_ops(hyperparameters, algo), algo, aliases=True)
    if given["run"]:
        names = ", ".join(sorted(given["run"]))
        raise ValueError(
            f"{names}: run settings are not constructor arguments; pass the seed as seed=..., "
            "the budget to learn(total_timesteps), and the rest to the callbacks"
        )
    algo_values = config.to_dict() if config is not None else parts["algorithm"]
    algorithm = cls.from_dict({**algo_values, **given["algorithm"]})
    policy_cfg = PolicyConfig.from_policy_kwargs(
        policy_kwargs, PolicyConfig.from_dict({**parts["policy"], **given["policy"]})
    )
    base = rollout.to_dict() if rollout is not None else parts["rollout"]
    fixed = source.fixed_n_envs  # an env object brings its own number of envs
    if fixed is not None and "n_envs" not in given["rollout"]:
        if rollout is not None and rollout.n_envs not in (1, fixed):
            raise ValueError(
                f"rollout.n_envs={rollout.n_envs}, but env is an object holding {fixed} "
                "env(s); pass an env id or a zero-argument factory to get several envs"
            )
        base = {**base, "n_envs": fixed}
    rollout_cfg = RolloutConfig.from_dict({**base, **given["rollout"]})
    return Resolved(
        source=source,
        algorithm=algorithm,
        policy=policy_cfg,
        rollout=rollout_cfg,
        seed=_seed(seed),
        preset_source=preset_source,
        preset_run=parts["run"],
    )


def _drop_no_ops(hyperparameters: Mapping[str, Any], algo: str) -> dict[str, Any]:
    """Drop SB3's arguments that change nothing here; refuse other values of them."""
    fields = {n for cls in concern_classes(algo).values() for n in cls.field_names()}
    out = {}
    for key, value in hyperparameters.items():
        if key in SB3_NO_OPS and key not in fields:
            if value != SB3_NO_OPS[key]:
                raise ValueError(
                    f"{key}={value!r} is not supported by natgrad (only "
                    f"{SB3_NO_OPS[key]!r}, sb3-contrib's default, is accepted); see "
                    "docs/from-sb3.md"
                )
            continue
        out[key] = value
    return out


def _seed(seed: int | None) -> int:
    """SB3's ``seed=None`` draws a seed; it is kept, so the run stays reproducible."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**31))  # type: ignore[operator]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0 (or None to draw one)")
    return int(seed)
