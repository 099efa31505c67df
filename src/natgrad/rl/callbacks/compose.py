"""The callback ``learn()`` runs: the user's, plus those its own arguments ask for."""

from __future__ import annotations

import os
from typing import Any

from natgrad.rl.callbacks.base import BaseCallback, CallbackList, as_callback
from natgrad.rl.callbacks.metrics import LoggerCallback, next_run_dir
from natgrad.rl.callbacks.progress import ConsoleLogCallback, ProgressBarCallback

__all__ = ["make_callback"]


def make_callback(
    callback: Any,
    *,
    progress_bar: bool = False,
    verbose: int = 0,
    log_interval: int = 1,
    tensorboard_log: str | os.PathLike[str] | None = None,
    tb_log_name: str = "run",
) -> BaseCallback:
    """``callback`` (see :func:`~natgrad.rl.callbacks.base.as_callback`), then a progress
    bar, a console line per ``log_interval`` iterations (``verbose``) and a logger writing
    ``tensorboard_log/<tb_log_name>_<k>/`` (progress.csv and TensorBoard)."""
    parts = [as_callback(callback)]
    if progress_bar:
        parts.append(ProgressBarCallback())
    if verbose:
        parts.append(ConsoleLogCallback(log_interval))
    if tensorboard_log is not None:
        parts.append(LoggerCallback(next_run_dir(tensorboard_log, tb_log_name), tensorboard=True))
    return parts[0] if len(parts) == 1 else CallbackList(parts)
