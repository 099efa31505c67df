"""The usual Atari preprocessing, as one picklable env wrapper (``env_wrapper="atari"``).

gymnasium's :class:`~gymnasium.wrappers.AtariPreprocessing` (no-op starts of up to 30
steps, the action repeated 4 frames with the last two max-pooled, 84×84 grayscale) then
:class:`~gymnasium.wrappers.FrameStackObservation` of 4 frames: observations are
``uint8`` of shape ``4×84×84``, which the policy takes through NatureCNN (Mnih et al.,
2015). ALE's ``-v5`` envs repeat each action 4 frames themselves; the wrapper moves that
repetition into the preprocessing (so the frames can be max-pooled), keeping the total
of 4. Sticky actions (v5's ``repeat_action_probability=0.25``) stay as the env has them.

    natgrad train ALE/Pong-v5 --env-package ale_py --env-wrapper atari

Needs the ``atari`` extra (``ale-py``, which ships the ROMs, and ``opencv-python-headless``
for the resizing).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import gymnasium as gym

__all__ = ["atari_wrapper", "resolve_wrapper"]

WRAPPERS = {"atari": "natgrad.rl.envs.atari:atari_wrapper"}


def atari_wrapper(env: gym.Env, frame_stack: int = 4) -> gym.Env:
    """``FrameStackObservation(AtariPreprocessing(env), frame_stack)`` (module docstring)."""
    base = env.unwrapped
    skip = getattr(base, "_frameskip", 1)
    frame_skip = 4
    if isinstance(skip, int) and skip > 1:
        base._frameskip = 1  # type: ignore[attr-defined]  # repeated by the preprocessing
        frame_skip = skip
    elif not isinstance(skip, int):  # a random frame skip: leave it to the env
        frame_skip = 1
    try:
        env = gym.wrappers.AtariPreprocessing(env, frame_skip=frame_skip)
    except gym.error.DependencyNotInstalled as err:
        raise ValueError(f"env_wrapper='atari' needs opencv: {err} (natgrad[atari])") from None
    return gym.wrappers.FrameStackObservation(env, frame_stack)


def resolve_wrapper(spec: str) -> Callable[[gym.Env], gym.Env]:
    """The wrapper ``spec`` names: ``"atari"`` or ``"module:function"`` (``env -> env``).

    Raises:
        ValueError: A name that cannot be imported or is not callable.
    """
    path = WRAPPERS.get(spec, spec)
    module_name, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name) if name else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"env_wrapper={spec!r} cannot be imported ({err})") from None
    if not callable(fn):
        raise ValueError(
            f"env_wrapper={spec!r}; give 'atari' or 'module:function' of a function env -> env"
        )
    return fn
