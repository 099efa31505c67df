"""A small dependency-free terminal progress bar for training loops.

On a TTY the bar redraws in place (``\\r``) at most every ``min_interval`` seconds.
Elsewhere (CI logs, files, pipes) it prints one plain line each time another
``line_every_pct`` percent is done, so logs stay readable. A line looks like::

    trpo CartPole-v1:  42% | 4200/10000 steps | 1.23k steps/s | ETA 00:04 | return=123.4
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ProgressBar", "format_duration", "format_rate"]


def format_duration(seconds: float) -> str:
    """Formats seconds as ``MM:SS`` or ``H:MM:SS`` (``?`` if unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    hours, rem = divmod(total, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def format_rate(rate: float) -> str:
    """Formats a rate with three significant digits and an SI suffix (``1.23k``)."""
    if not math.isfinite(rate) or rate < 0:
        return "?"
    for suffix in ("", "k", "M", "G"):
        if rate < 999.5 or suffix == "G":
            return f"{rate:.3g}{suffix}"
        rate /= 1000.0
    raise AssertionError("unreachable")  # pragma: no cover


def _format_postfix(postfix: dict[str, Any]) -> str:
    parts = []
    for key, value in postfix.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class ProgressBar:
    """Shows progress, throughput, ETA and the latest metrics of a loop.

    Example:
        >>> bar = ProgressBar(100_000, "trpo CartPole-v1", unit="steps")  # doctest: +SKIP
        >>> bar.update(2048, ret=21.5)  # doctest: +SKIP
        >>> bar.close()  # doctest: +SKIP

    Args:
        total: Total number of units (e.g. environment steps); a positive int.
        desc: Label printed before the bar.
        unit: Name of one unit in the display.
        file: Output stream; defaults to ``sys.stderr``.
        is_tty: Force TTY (in-place redraw) or plain-line mode; by default taken
            from ``file.isatty()``.
        min_interval: Minimum seconds between TTY redraws.
        line_every_pct: In plain-line mode, print a line every this many percent.
        clock: Monotonic time source in seconds (inject one for tests).
        disable: Print nothing.

    Raises:
        ValueError: If ``total``, ``min_interval`` or ``line_every_pct`` is out of range.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        unit: str = "steps",
        file: TextIO | None = None,
        is_tty: bool | None = None,
        min_interval: float = 0.1,
        line_every_pct: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        disable: bool = False,
    ) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise ValueError(f"total must be a positive int, got {total!r}")
        if not min_interval >= 0:
            raise ValueError(f"min_interval must be >= 0 seconds, got {min_interval!r}")
        if not 0 < line_every_pct <= 100:
            raise ValueError(f"line_every_pct must be in (0, 100], got {line_every_pct!r}; e.g. 10")
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = sys.stderr if file is None else file
        if is_tty is None:
            try:
                is_tty = bool(self.file.isatty())
            except (AttributeError, ValueError):
                is_tty = False
        self.is_tty = is_tty
        self.min_interval = float(min_interval)
        self.line_every_pct = float(line_every_pct)
        self.disable = disable
        self._clock = clock
        self._start = clock()
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._last_draw = -math.inf
        self._last_bucket = 0
        self._last_len = 0
        self._printed_n: int | None = None
        self._closed = False

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was created."""
        return self._clock() - self._start

    def rate(self) -> float:
        """Average units per second since the start (NaN before any time passed)."""
        elapsed = self.elapsed
        return self.n / elapsed if elapsed > 0 else math.nan

    def eta(self) -> float:
        """Estimated seconds left at the average rate (NaN if unknown)."""
        rate = self.rate()
        if not rate > 0:
            return 0.0 if self.n >= self.total else math.nan
        return max(self.total - self.n, 0) / rate

    def format(self) -> str:
        """Returns the current status line (without ``\\r`` or newline)."""
        pct = min(100.0 * self.n / self.total, 100.0)
        head = f"{self.desc}: " if self.desc else ""
        parts = [
            f"{head}{int(pct):3d}%",
            f"{self.n}/{self.total} {self.unit}",
            f"{format_rate(self.rate())} {self.unit}/s",
            f"ETA {format_duration(self.eta())}",
        ]
        if self.postfix:
            parts.append(_format_postfix(self.postfix))
        return " | ".join(parts)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advances by ``n`` units and optionally updates the displayed metrics.

        Args:
            n: Units completed since the last call (non-negative).
            **postfix: Metrics to show, e.g. ``ret=123.4``; they replace the values
                of the same keys from earlier calls.

        Raises:
            ValueError: If ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0 (units done since the last update), got {n!r}")
        self.n += n
        self.postfix.update(postfix)
        if self.disable or self._closed:
            return
        if self.is_tty:
            now = self._clock()
            if now - self._last_draw >= self.min_interval or self.n >= self.total:
                self._redraw()
                self._last_draw = now
        else:
            bucket = int(min(self.n / self.total, 1.0) * 100 // self.line_every_pct)
            if bucket > self._last_bucket:
                self._last_bucket = bucket
                self._print_line()

    def _redraw(self) -> None:
        width = shutil.get_terminal_size(fallback=(120, 24)).columns
        line = self.format()[: max(width - 1, 20)]
        pad = " " * max(self._last_len - len(line), 0)
        self._last_len = len(line)
        self.file.write("\r" + line + pad)
        self.file.flush()

    def _print_line(self) -> None:
        self._printed_n = self.n
        self.file.write(self.format() + "\n")
        self.file.flush()

    def close(self) -> None:
        """Draws the final state and ends the line. Calling it again is a no-op."""
        if self._closed:
            return
        self._closed = True
        if self.disable:
            return
        if self.is_tty:
            self._redraw()
            self.file.write("\n")
            self.file.flush()
        elif self._printed_n != self.n:  # final line unless it was just printed
            self._print_line()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
