"""Ctrl-C as a request to stop cleanly: :class:`InterruptCallback`."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from natgrad.rl.callbacks.base import BaseCallback

__all__ = ["InterruptCallback"]


class InterruptCallback(BaseCallback):
    """The first Ctrl-C (SIGINT) lets the iteration in progress finish, then stops
    training (``learn`` returns normally, so checkpoint callbacks with ``save_on_end``
    save); a second one interrupts at once (``KeyboardInterrupt``), leaving the last
    checkpoint as it was.

    Only installed in the main thread; elsewhere it does nothing.

    Attributes:
        requested: Whether a Ctrl-C asked training to stop.
    """

    def __init__(self, message: str = "Ctrl-C: finishing this iteration, then stopping "
                 "(again to abort)") -> None:  # fmt: skip
        super().__init__()
        self.message = message
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}", file=sys.stderr)

    def _on_training_start(self) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _on_step(self) -> bool:
        return not self.requested

    def _on_training_end(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
