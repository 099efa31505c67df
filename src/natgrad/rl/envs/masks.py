"""Invalid-action masks: where they come from and the checks they pass.

An env tells which actions are legal in its current state in one of two ways (both
sb3-contrib's ``MaskablePPO`` conventions):

* a method ``env.action_masks()`` (found through wrappers), or
* ``info["action_mask"]`` in the dicts ``reset`` and ``step`` return.

A mask is a ``bool`` array with one entry per logit: ``n`` for ``Discrete(n)``, and
``sum(nvec)`` for ``MultiDiscrete(nvec)`` (the sub-actions' masks concatenated, or a
list of them); ``True`` marks a legal action. Integer arrays of 0/1 are accepted too.
Masks are only defined for ``Discrete`` and ``MultiDiscrete`` action spaces.

>>> from gymnasium import spaces
>>> check_masks([[True, False, True]], spaces.Discrete(3)).tolist()
[[True, False, True]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["check_masks", "mask_method", "mask_segments", "mask_size"]


def mask_size(action_space: gym.Space) -> int | None:
    """Entries of one mask (``n`` or ``sum(nvec)``), or ``None`` when the space has no masks."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(action_space.nvec.sum())
    return None


def mask_segments(action_space: gym.Space) -> list[int]:
    """The sizes of the sub-actions a mask is made of (``[n]`` or ``nvec``)."""
    if isinstance(action_space, spaces.MultiDiscrete):
        return [int(n) for n in action_space.nvec.reshape(-1)]
    return [int(action_space.n)]  # type: ignore[attr-defined]


def mask_method(env: gym.Env) -> Callable[[], Any] | None:
    """The env's ``action_masks`` method (looked up through wrappers), or ``None``."""
    try:
        fn = env.get_wrapper_attr("action_masks") if hasattr(env, "get_wrapper_attr") else None
    except AttributeError:
        fn = None
    if fn is None:
        fn = getattr(env, "action_masks", None)
    return fn if callable(fn) else None


def _as_rows(masks: Any, size: int, n: int, what: str) -> np.ndarray:
    if isinstance(masks, np.ndarray) and masks.dtype == np.bool_ and masks.shape == (n, size):
        return masks
    try:
        rows = [
            np.concatenate([np.asarray(p).reshape(-1) for p in m])
            if isinstance(m, (list, tuple)) and m and np.ndim(m[0]) > 0
            else np.asarray(m)
            for m in masks
        ]
        arr = np.stack(rows) if rows else np.zeros((0, size), dtype=bool)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{what}: the masks cannot be read as one bool array per env ({err}); give each "
            f"a bool array of {size} entries"
        ) from None
    if arr.ndim != 2 or arr.shape != (n, size):
        got = arr.shape[1:] if arr.ndim >= 1 and arr.shape[0] == n else arr.shape
        raise ValueError(
            f"{what}: an action mask has shape {got}, expected ({size},): one bool per "
            "action (for MultiDiscrete, the sub-actions' masks concatenated)"
        )
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iu" or not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{what}: an action mask has dtype {arr.dtype}"
                + ("" if arr.dtype.kind not in "iu" else " with values other than 0/1")
                + "; masks must be bool arrays (True = legal)"
            )
        arr = arr.astype(bool)
    return arr


def check_masks(
    masks: Any, action_space: gym.Space, *, n: int | None = None, what: str = "action_masks"
) -> np.ndarray:
    """Validate a batch of masks; returns them as a ``(n, size)`` bool array.

    Args:
        masks: ``n`` masks (an array ``(n, size)`` or a sequence of per-env masks).
        action_space: The single-env action space.
        n: The expected number of masks (default: as many as given).
        what: Where the masks come from, for the messages.

    Raises:
        ValueError: The space takes no masks; a mask of the wrong shape or dtype; a row
            (or a sub-action) with no legal action.
    """
    size = mask_size(action_space)
    if size is None:
        raise ValueError(
            f"{what}: action masks need a Discrete or MultiDiscrete action space, got "
            f"{action_space!r}"
        )
    count = len(masks) if n is None else n
    arr = _as_rows(masks, size, count, what)
    start = 0
    for width in mask_segments(action_space):
        ok = arr[:, start : start + width].any(axis=1)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            sub = f" (sub-action at logits {start}..{start + width - 1})" if width != size else ""
            raise ValueError(
                f"{what}: row {row} of the action masks allows no action{sub}: every entry is "
                "False. An env must leave at least one legal action in every state (end the "
                "episode instead)"
            )
        start += width
    return arr


def masks_from_infos(infos: Sequence[dict[str, Any]]) -> list[Any] | None:
    """``info["action_mask"]`` of each env, or ``None`` if the first has none."""
    if not infos or "action_mask" not in infos[0]:
        return None
    return [info.get("action_mask") for info in infos]
