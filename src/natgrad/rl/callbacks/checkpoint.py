"""Saving the model as it trains: :class:`CheckpointCallback`."""

from __future__ import annotations

import os
from pathlib import Path

from natgrad.rl.callbacks.base import BaseCallback

__all__ = ["CheckpointCallback"]


class CheckpointCallback(BaseCallback):
    """Save a checkpoint every ``save_freq`` env steps (SB3's ``CheckpointCallback``).

    Each save is atomic (written to a temporary file, then renamed), so a crash or a full
    disk never leaves a partial checkpoint, and the previous one survives.

    Args:
        save_freq: Save when the model's env steps (all envs together) pass a multiple of
            this. SB3 counts calls of ``on_step``, i.e. steps per env; natgrad's
            ``on_step`` runs once per iteration, so it counts env steps instead.
        save_path: The folder.
        name_prefix: Files are ``<name_prefix>_<steps>_steps.pt``.
        latest_only: Write one file, ``<save_path>/<name_prefix>.pt``, replacing it each
            time (what ``natgrad train`` does: ``checkpoint.pt``).
        save_on_end: Also save when training ends (a Ctrl-C or a stopping callback
            included; an exception leaves the last good checkpoint untouched).
        verbose: 1 prints each save.
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str | os.PathLike[str],
        name_prefix: str = "natgrad_model",
        *,
        latest_only: bool = False,
        save_on_end: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(f"save_freq={save_freq!r} must be an int >= 1 (env steps)")
        self.save_freq, self.save_path, self.name_prefix = save_freq, Path(save_path), name_prefix
        self.latest_only, self.save_on_end = latest_only, save_on_end
        self._last = 0
        self.last_path: Path | None = None

    def _init_callback(self) -> None:
        self.save_path.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps // self.save_freq

    def path(self) -> Path:
        """Where the next save goes."""
        if self.latest_only:
            return self.save_path / f"{self.name_prefix}.pt"
        return self.save_path / f"{self.name_prefix}_{self.num_timesteps}_steps.pt"

    def save(self) -> Path:
        self.last_path = self._model.save(self.path())
        if self.verbose:
            print(f"saved a checkpoint to {self.last_path}")
        return self.last_path

    def _on_step(self) -> bool:
        k = self.num_timesteps // self.save_freq
        if k > self._last:
            self._last = k
            self.save()
        return True

    def _on_training_end(self) -> None:
        failed = self.locals.get("exception") is not None
        if self.save_on_end and not failed and self._model.total_steps > 0:
            self.num_timesteps = self._model.num_timesteps
            self.save()
