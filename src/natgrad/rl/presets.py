"""Presets: per-environment settings read from the data file ``natgrad/presets/trpo.toml``."""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import gymnasium as gym


def _load() -> dict[str, Any]:
    text = resources.files("natgrad").joinpath("presets/trpo.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def env_family(env_id: str) -> str:
    """``"mujoco"``, ``"classic_control"`` or ``"other"``, from the env's entry point."""
    spec = gym.registry.get(env_id)
    entry = str(getattr(spec, "entry_point", "")) if spec is not None else ""
    if "envs.mujoco" in entry:
        return "mujoco"
    if "envs.classic_control" in entry:
        return "classic_control"
    return "other"


def preset_for(env_id: str) -> tuple[dict[str, Any], str]:
    """The preset fields for ``env_id`` and the source they cite.

    The env's own table is laid over its family's defaults.
    """
    data = _load()
    family = env_family(env_id)
    values = dict(data["defaults"][family])
    sources = [values.pop("source")]
    own = data.get("envs", {}).get(env_id)
    if own is not None:
        own = dict(own)
        sources.append(own.pop("source"))
        values.update(own)
    return values, "; ".join(reversed(sources))


def preset_env_ids() -> list[str]:
    """Env ids with a preset of their own."""
    return sorted(_load().get("envs", {}))
