"""Typed configs, one per concern, each field with a docstring (the CLI is made from them).

* :class:`TRPOConfig` / :class:`NPGConfig` (:class:`AlgoConfig`): what is learned and how;
* :class:`PolicyConfig`: the default networks (SB3's ``policy_kwargs``);
* :class:`RolloutConfig`: where and how fast experience is collected;
* :class:`RunConfig`: the budget, seed and I/O cadence of a ``natgrad train`` run.

Field names are unique across the four, so flat settings (a preset, ``--set k=v``,
keyword arguments of ``TRPO(...)``) are routed to their concern by name with
:func:`split_fields`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from natgrad.rl.config.algo import ALGO_CONFIGS, AlgoConfig, NPGConfig, TRPOConfig
from natgrad.rl.config.base import ConfigBase, parse_value
from natgrad.rl.config.policy import PolicyConfig
from natgrad.rl.config.rollout import RolloutConfig
from natgrad.rl.config.run import RunConfig

__all__ = [
    "ALGO_CONFIGS",
    "SB3_ALIASES",
    "AlgoConfig",
    "ConfigBase",
    "NPGConfig",
    "PolicyConfig",
    "RolloutConfig",
    "RunConfig",
    "TRPOConfig",
    "concern_classes",
    "parse_value",
    "split_fields",
]

SB3_ALIASES: dict[str, str] = {
    "learning_rate": "critic_lr",
    "cg_max_steps": "cg_iters",
    "line_search_shrinking_factor": "line_search_shrink",
    "target_kl": "max_kl",
    "sub_sampling_factor": "fisher_subsample",
}
"""sb3-contrib TRPO argument → natgrad field (``sub_sampling_factor`` k becomes 1/k)."""


def concern_classes(algo: str) -> dict[str, type[ConfigBase]]:
    """``{"algorithm": TRPOConfig or NPGConfig, "policy": ..., "rollout": ..., "run": ...}``."""
    if algo not in ALGO_CONFIGS:
        raise ValueError(f"algo={algo!r}; use one of {', '.join(map(repr, ALGO_CONFIGS))}")
    return {
        "algorithm": ALGO_CONFIGS[algo],
        "policy": PolicyConfig,
        "rollout": RolloutConfig,
        "run": RunConfig,
    }


def split_fields(
    values: Mapping[str, Any], algo: str, *, aliases: bool = False
) -> dict[str, dict[str, Any]]:
    """Route flat ``{field: value}`` settings to their concern.

    Args:
        values: Field names of any of the four configs.
        algo: ``"trpo"`` or ``"npg"`` (which algorithm config applies).
        aliases: Also accept sb3-contrib's names (:data:`SB3_ALIASES`).

    Raises:
        ValueError: For a name no config has, suggesting close names.
    """
    classes = concern_classes(algo)
    owner = {name: concern for concern, cls in classes.items() for name in cls.field_names()}
    out: dict[str, dict[str, Any]] = {concern: {} for concern in classes}
    for key, value in values.items():
        name = key
        if aliases and key in SB3_ALIASES:
            name = SB3_ALIASES[key]
            if key == "sub_sampling_factor":
                value = 1.0 / float(value) if value else value
        if name not in owner:
            known = sorted(owner) + (sorted(SB3_ALIASES) if aliases else [])
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see --help-config"
            raise ValueError(f"unknown setting {key!r} for {algo.upper()}; {hint}")
        out[owner[name]][name] = value
    return out
