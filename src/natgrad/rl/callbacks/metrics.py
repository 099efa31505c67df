"""Metrics to disk: ``progress.csv`` and TensorBoard, one row per iteration."""

from __future__ import annotations

import os
from pathlib import Path

from natgrad.rl.callbacks.base import BaseCallback
from natgrad.utils.logger import RunLogger

__all__ = ["LoggerCallback", "next_run_dir"]


class LoggerCallback(BaseCallback):
    """Writes every iteration's metrics (and those added with ``model.record``) to
    ``<folder>/progress.csv`` and, if available, TensorBoard event files there.

    Args:
        folder: The run's folder (created if missing).
        tensorboard: ``True`` (an error if the tensorboard package is missing), ``False``,
            or ``None`` (when installed).
        resume: Continue an existing ``progress.csv``, dropping rows after the model's
            current step (they came after the checkpoint being resumed).
    """

    def __init__(
        self, folder: str | os.PathLike[str], tensorboard: bool | None = None, resume: bool = False
    ) -> None:
        super().__init__()
        self.folder, self.tensorboard, self.resume = Path(folder), tensorboard, resume
        self.logger: RunLogger | None = None

    def _on_training_start(self) -> None:
        self.logger = RunLogger(self.folder, tensorboard=self.tensorboard, resume=self.resume)
        if self.resume:
            self.logger.truncate_after(self.num_timesteps)
        self.resume = True  # a later learn() call continues the same file

    def _on_step(self) -> bool:
        assert self.logger is not None  # opened in _on_training_start
        self.logger.log(self.num_timesteps, self.locals.get("metrics", {}))
        return True

    def _on_training_end(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None


def next_run_dir(root: str | os.PathLike[str], name: str) -> Path:
    """``root/name_1``, ``root/name_2``, ...: the first that does not exist (SB3's layout)."""
    root = Path(root)
    k = 1
    while (root / f"{name}_{k}").exists():
        k += 1
    return root / f"{name}_{k}"
