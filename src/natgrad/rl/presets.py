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


def preset_for(env_id: str, algo: str = "trpo") -> tuple[dict[str, Any], str]:
    """The preset fields for ``env_id`` under ``algo`` and the sources they cite.

    Layers, later over earlier: the env family's defaults, ``[npg.defaults.<family>]``
    (NPG only), the env's own table, and its ``[envs."<id>".npg]`` subtable (NPG only).
    """
    if algo not in ("trpo", "npg"):
        raise ValueError(f"algo={algo!r}; presets exist for 'trpo' and 'npg'")
    data = _load()
    family = env_family(env_id)
    own = dict(data.get("envs", {}).get(env_id) or {})
    own_npg = own.pop("npg", None)
    layers = [data["defaults"][family], own]
    if algo == "npg":
        layers.insert(1, data.get("npg", {}).get("defaults", {}).get(family) or {})
        layers.append(own_npg or {})
    values: dict[str, Any] = {}
    sources: list[str] = []
    for layer in layers:
        layer = dict(layer)
        if "source" in layer:
            sources.append(layer.pop("source"))
        values.update(layer)
    return values, "; ".join(reversed(sources))


def preset_env_ids() -> list[str]:
    """Env ids with a preset of their own."""
    return sorted(_load().get("envs", {}))
