"""Fitting the critic in a helper process while the policy step runs.

In an iteration, the critic's regression and the policy's natural step depend
only on the batch (the advantages and λ-returns were computed with the critic
*before* its update), so they can run at the same time on two cores:

    rollout → values, GAE → ┬ policy step (this process)         ┬→ next iteration
                            └ critic regression (helper process) ┘

The helper is forked from this process (so it starts in milliseconds and never
re-imports the user's ``__main__``); it sees the critic's parameters and Adam
moments in shared memory and runs the same numpy code
(:class:`~natgrad.rl.algos.critic.NumpyAdamMLP`) that the in-process path runs, on the
same minibatch order, drawn here from the agent's generator: the results are the
same bits whichever process computes them.  Where ``fork`` is not the platform's
safe default (macOS, Windows), or a helper cannot start, fits run in this process.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from natgrad.rl.algos.critic import MLPCriticTrainer, NumpyAdamMLP
from natgrad.rl.envs.subproc import stop_workers

__all__ = ["CriticWorker", "PendingFit"]


def fork_available() -> bool:
    """Whether the helper can be forked: Linux, where ``fork`` is the safe default."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def _serve(conn: Any, parent_end: Any, core: NumpyAdamMLP) -> None:
    """Helper process: fit on request until told to stop (or the parent goes away).

    It only runs numpy (no torch ops), so the state torch's thread pools had at
    the fork does not matter.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent_end.close()  # so that the parent's death reads as EOF here
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "close":
            return
        _, obs, returns, order, sizes, steps = msg
        try:
            conn.send(("ok", core.fit(obs, returns, order, sizes, steps)))
        except Exception as exc:  # report, then keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class PendingFit:
    """A critic fit started by :meth:`CriticWorker.fit_async` (or a deferred one in this
    process); :meth:`result` finishes it and returns the mean minibatch loss."""

    def __init__(
        self,
        worker: CriticWorker | None = None,
        n_steps: int = 0,
        compute: Callable[[], float] | None = None,
    ) -> None:
        self._worker, self._n_steps, self._compute = worker, n_steps, compute
        self._loss: float | None = None

    @classmethod
    def done(cls, loss: float) -> PendingFit:
        pending = cls()
        pending._loss = loss
        return pending

    def result(self) -> float:
        if self._loss is None:
            if self._compute is not None:
                self._loss = self._compute()
            else:
                assert self._worker is not None  # one of the two is set
                self._loss = self._worker._receive(self._n_steps)
        return self._loss


class CriticWorker:
    """Runs :meth:`MLPCriticTrainer.fit` in a helper process (see the module docstring).

    Args:
        trainer: The in-process trainer; its buffers are moved to shared memory when
            the helper starts.
        poll_interval: Seconds between liveness checks while waiting for a result.
    """

    def __init__(self, trainer: MLPCriticTrainer, poll_interval: float = 0.5) -> None:
        self.trainer = trainer
        self.poll_interval = poll_interval
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False
        self._busy = False
        self._failed: str | None = None
        self.poisoned: str | None = None  # set when the parameters may be half-written

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Launch the helper process (returns at once; it announces itself when ready)."""
        if self._proc is not None or self._failed is not None:
            return
        if not fork_available():
            self._failed = "no fork on this platform: fits run in process"
            return
        self.trainer.share_memory()
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, parent, self.trainer.core), daemon=True)
        try:
            proc.start()
        except Exception as exc:  # no subprocesses here: stay in process
            self._failed = f"could not start the critic helper process ({exc})"
            parent.close()
            child.close()
            return
        child.close()
        self._proc, self._conn = proc, parent

    def is_ready(self, wait: float = 0.0) -> bool:
        """Whether the helper has started and can take a fit (waits up to ``wait`` s)."""
        if self._ready or self._proc is None or self._failed is not None:
            return self._ready
        if self._conn.poll(wait):
            try:
                status, _ = self._conn.recv()
            except (EOFError, OSError):
                status = "died"
            if status == "ready":
                self._ready = True
            else:
                self._failed = "the critic helper process died while starting"
        elif not self._proc.is_alive():
            self._failed = f"the critic helper process exited (code {self._proc.exitcode})"
        return self._ready

    def close(self) -> None:
        """Stop the helper (waiting for a fit in progress first)."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        self._proc = self._conn = None
        self._ready = False
        stop_workers([(conn, proc)], timeout=2.0)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- fitting --------------------------------------------------------------------
    def fit_async(
        self, obs: Tensor, returns: Tensor, *, epochs: int, batch_size: int,
        generator: torch.Generator,
    ) -> PendingFit:  # fmt: skip
        """Start a fit; the helper computes it if it is ready, else this process does now.

        The minibatch order is drawn from ``generator`` here, in either case.
        """
        if self.poisoned is not None:
            raise RuntimeError(self.poisoned)
        if self._busy:
            raise RuntimeError("a critic fit is already in progress; call result() first")
        t = self.trainer
        order, sizes = t.minibatch_order(
            obs.shape[0], epochs=epochs, batch_size=batch_size, generator=generator
        )
        x, y = obs.numpy(), returns.numpy()
        if self._proc is None and self._failed is None:
            self.start()
        if self.is_ready(wait=1.0 if self._proc is not None else 0.0):
            if self._proc.is_alive():
                try:
                    self._conn.send(("fit", np.ascontiguousarray(x), y, order, sizes, t.steps))
                    self._busy = True
                    return PendingFit(self, len(sizes))
                except (BrokenPipeError, OSError):
                    pass
            # Gone between fits: the parameters are intact, so carry on in process.
            code = self._proc.exitcode
            self.close()
            self._failed = f"the critic helper process exited (code {code})"
            warnings.warn(f"{self._failed}; fitting the critic in this process", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
        # In this process, when the result is asked for (after the policy step).
        return PendingFit(compute=functools.partial(t.run, obs, returns, order, sizes))

    def _poison(self, why: str) -> RuntimeError:
        self.poisoned = (
            f"{why}; the critic's parameters are undefined, so this agent can neither train "
            "nor save: resume from the last checkpoint"
        )
        return RuntimeError(self.poisoned)

    def _receive(self, n_steps: int) -> float:
        """Wait for the helper's reply. An interrupt (Ctrl-C) while waiting still waits for
        the fit to finish before it propagates, so the parameters are never left
        half-written; a second interrupt stops the helper and marks the agent unusable."""
        conn, proc = self._conn, self._proc
        interrupt: BaseException | None = None
        try:
            while True:
                try:
                    while not conn.poll(self.poll_interval):
                        if not proc.is_alive():
                            raise self._poison(
                                f"the critic helper process died during a fit (exit code "
                                f"{proc.exitcode})"
                            )
                    status, payload = conn.recv()
                    break
                except KeyboardInterrupt as exc:
                    if interrupt is not None:
                        self.close()
                        raise self._poison("interrupted twice during a critic fit") from exc
                    interrupt = exc
        except (EOFError, OSError) as err:
            raise self._poison("the critic helper process died during a fit") from err
        finally:
            self._busy = False
        if status != "ok":
            raise self._poison(f"the critic fit failed in the helper process: {payload}")
        self.trainer.steps += n_steps
        if interrupt is not None:
            raise interrupt
        return float(payload)
