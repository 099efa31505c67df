"""Progress on the console: a tqdm bar, and a line per iteration with ``verbose=1``.

On a terminal the bar redraws in place; when the output is not a terminal (a log file,
CI), a plain line is printed at every 10% of the run instead, in tqdm's own format.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from natgrad.rl.callbacks.base import BaseCallback

__all__ = ["ConsoleLogCallback", "ProgressBarCallback"]


class ProgressBarCallback(BaseCallback):
    """A tqdm progress bar over this ``learn`` call's env steps, with the mean return
    and the KL of the last step.

    Args:
        file: Where to draw (default ``sys.stderr``).
        description: The bar's prefix.
    """

    def __init__(self, file: TextIO | None = None, description: str = "") -> None:
        super().__init__()
        self.file, self.description = file, description
        self._bar: Any = None
        self._start = 0
        self._next_tenth = 1

    def _on_training_start(self) -> None:
        self._file = self.file if self.file is not None else sys.stderr
        self._start = self.num_timesteps
        self._total = max(self.total_timesteps - self._start, 1)
        self._desc = self.description or self._model.algo.upper()
        self._t0, self._next_tenth = time.perf_counter(), 1
        if getattr(self._file, "isatty", lambda: False)():
            self._bar = tqdm(total=self._total, desc=self._desc, unit="step", file=self._file,
                             dynamic_ncols=True)  # fmt: skip

    def _on_step(self) -> bool:
        done = min(self.num_timesteps - self._start, self._total)
        m = self.locals.get("metrics", {})
        postfix = {"ret": f"{m.get('episode_return', float('nan')):.1f}",
                   "kl": f"{m.get('kl', float('nan')):.4f}"}  # fmt: skip
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(done - self._bar.n)
        elif 10 * done >= self._next_tenth * self._total:
            while self._next_tenth * self._total <= 10 * done:
                self._next_tenth += 1
            line = tqdm.format_meter(
                done, self._total, time.perf_counter() - self._t0, prefix=self._desc,
                unit="step", postfix=", ".join(f"{k}={v}" for k, v in postfix.items()),
            )  # fmt: skip
            print(line, file=self._file, flush=True)
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ConsoleLogCallback(BaseCallback):
    """One line of the iteration's main metrics every ``log_interval`` iterations."""

    KEYS = ("env_steps", "episode_return", "kl", "value_loss", "steps_per_second")

    def __init__(self, log_interval: int = 1, file: TextIO | None = None) -> None:
        super().__init__()
        if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval < 1:
            raise ValueError(f"log_interval={log_interval!r} must be an int >= 1")
        self.log_interval, self.file = log_interval, file

    def _on_step(self) -> bool:
        if self.n_calls % self.log_interval == 0:
            m = self.locals.get("metrics", {})
            text = "  ".join(f"{k}={m[k]:.4g}" for k in self.KEYS if k in m)
            print(f"iteration {self._model.iteration}: {text}",
                  file=self.file if self.file is not None else sys.stdout)  # fmt: skip
        return True
