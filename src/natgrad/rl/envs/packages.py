"""Env packages: modules to import (and functions to call) before an env id is looked up.

Some packages register their envs only when asked: MinAtar's ids exist after
``minatar.gym.register_envs()``, ALE's after ``import ale_py``. An env package names
what to run, ``"module"`` (imported) or ``"module:function"`` (imported, then called
with no arguments), several separated by commas:

    natgrad train MinAtar/Breakout-v1 --env-package minatar.gym:register_envs
    TRPO("MinAtar/Breakout-v1", env_package="minatar.gym:register_envs")

Each is run once per process, in the learner and in every env worker (subprocess or
Ray actor), before the env is built.

>>> load_env_packages("json")  # any importable module
"""

from __future__ import annotations

import importlib

__all__ = ["load_env_packages"]

_LOADED: set[str] = set()


def load_env_packages(spec: str) -> None:
    """Import (and call) each comma-separated ``module[:function]`` of ``spec`` once.

    Raises:
        ValueError: A module that cannot be imported, or a function that is missing or
            fails, naming it.
    """
    for item in (s.strip() for s in spec.split(",")):
        if not item or item in _LOADED:
            continue
        module_name, _, func = item.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"env_package {item!r}: cannot import {module_name!r} ({err}); install it "
                "(e.g. `pip install natgrad[minatar]` or `natgrad[atari]`) or fix the name"
            ) from None
        if func:
            fn = getattr(module, func, None)
            if not callable(fn):
                raise ValueError(
                    f"env_package {item!r}: {module_name!r} has no function {func!r}; give "
                    "'module' or 'module:function' (e.g. minatar.gym:register_envs)"
                )
            try:
                fn()
            except Exception as err:
                raise ValueError(f"env_package {item!r}: {func}() raised {err!r}") from err
        _LOADED.add(item)
