"""Envs in subprocesses: :class:`AsyncVecEnv` (the :class:`~natgrad.rl.envs.vec.VecEnv`
interface over Pipes) and :func:`stop_workers`, shared with the critic's helper process.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np

from natgrad.rl.envs import obs_tree
from natgrad.rl.envs.vec import StepResult, StepWatch, SyncVecEnv, VecEnv

__all__ = ["AsyncVecEnv", "stop_workers"]


class _Cloudpickled:
    """An env constructor sent to a worker by cloudpickle, so that lambdas and classes
    defined in a script or a notebook work (as in SB3's ``SubprocVecEnv``)."""

    def __init__(self, fn: Callable[[], gym.Env]) -> None:
        self.fn = fn

    def __getstate__(self) -> bytes:
        return cloudpickle.dumps(self.fn)

    def __setstate__(self, blob: bytes) -> None:
        self.fn = cloudpickle.loads(blob)

    def __call__(self) -> gym.Env:
        return self.fn()


def stop_workers(workers: Sequence[tuple[Any, Any]], timeout: float = 1.0) -> None:
    """Ask each ``(connection, process)`` helper to close, then join it (terminating any
    that does not exit within ``timeout`` seconds) and close the connection."""
    for conn, proc in workers:
        if proc.is_alive():
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
    for conn, proc in workers:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=1.0)
        conn.close()


def _worker(
    conn: Any, env_fns: list, indices: tuple[int, ...], return_infos: bool, watch: Any
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when to stop (it finishes
    # the iteration and saves a checkpoint), so the workers must not die on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    venv = None
    try:
        venv = SyncVecEnv(
            env_fns, env_indices=indices, return_infos=return_infos, watch=StepWatch(watch)
        )
        conn.send(("ok", (venv.observation_space, venv.action_space)))
        while True:
            cmd, data = conn.recv()
            if cmd == "step":
                obs, rew, term, trunc, final, infos = venv.step(data)
                done = term | trunc
                ended = final if done.any() else None
                conn.send(("ok", (obs, rew, term, trunc, ended, infos, venv.masks)))
            elif cmd == "reset":
                obs = venv.reset(data)
                conn.send(("ok", (obs, venv.masks)))
            elif cmd == "get_state":
                conn.send(("ok", venv.get_state()))
            elif cmd == "set_state":
                venv.set_state(data)
                conn.send(("ok", None))
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except KeyboardInterrupt:
        pass
    except Exception as err:
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        try:
            conn.send(("error", (str(err), detail + "\n" + traceback.format_exc())))
        except Exception:  # parent gone
            pass
    finally:
        if venv is not None:
            venv.close()
        conn.close()


def _join_masks(parts: list[Any]) -> list[Any] | None:
    if any(p is None for p in parts):
        return None
    return [m for p in parts for m in p]


class AsyncVecEnv(VecEnv):
    """Runs groups of envs in subprocesses and talks to them over Pipes.

    Several envs share a worker (one per core), which ``gymnasium.vector.AsyncVectorEnv``
    (one process per env) does not: ``python bench/vec_envs.py --repeats 3``
    (``bench/results/vec_envs.jsonl``) measured 1.47× gymnasium's rollout rate on
    CartPole-v1 and 1.58× on Hopper-v5, 8 envs on 2 cores.

    An exception inside a worker is reported in the parent as a ``RuntimeError`` naming
    the env index and the original exception; a worker that dies is detected within
    ``poll_interval`` seconds. After such an error the vector env is closed.

    Args:
        env_fns: Picklable zero-argument callables building the envs (e.g.
            ``EnvFactory.bind(i, seed)``).
        env_indices: Global env index of each env (default ``0..N-1``).
        n_workers: Number of subprocesses; envs are split into contiguous groups
            (default: one per env, capped at the CPU count).
        context: ``multiprocessing`` start method: ``"forkserver"`` (default where
            available) or ``"spawn"``.
        timeout: Seconds each env may spend in one ``step()`` (other commands: seconds to
            wait for the reply) before the vector env fails with an error naming the env
            (``None``: wait as long as the worker is alive).
        return_infos: Whether ``step`` returns the per-env info dicts.
        poll_interval: Seconds between liveness checks of a silent worker.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        env_indices: Sequence[int] | None = None,
        n_workers: int | None = None,
        context: str | None = None,
        timeout: float | None = None,
        return_infos: bool = False,
        poll_interval: float = 0.5,
    ) -> None:
        n = len(env_fns)
        self._setup(n, env_indices)
        if n_workers is None:
            n_workers = min(n, mp.cpu_count() or 1)
        if not 1 <= n_workers <= n:
            raise ValueError(f"n_workers={n_workers} must be between 1 and n_envs={n}")
        if context is None:
            context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        if context not in ("forkserver", "spawn"):
            raise ValueError(f"context={context!r}; use 'forkserver' or 'spawn'")
        self.timeout, self.poll_interval = timeout, poll_interval
        self._closed = False
        ctx: Any = mp.get_context(context)
        if context == "forkserver":
            # Workers fork from a server that has imported this module (and numpy, gymnasium,
            # ...) once; no effect if the user's forkserver already runs.
            ctx.set_forkserver_preload(["__main__", __name__])
        bounds = np.linspace(0, n, n_workers + 1).round().astype(int)
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._watches: list[StepWatch] = []
        for sl in self._slices:
            parent, child = ctx.Pipe()
            shared = ctx.RawArray("d", 3)  # the worker's StepWatch, read here
            self._watches.append(StepWatch(shared))
            fns = [_Cloudpickled(fn) for fn in env_fns[sl]]
            args = (child, fns, self.env_indices[sl], return_infos, shared)
            proc = ctx.Process(target=_worker, args=args, daemon=True)
            try:
                proc.start()
            except (pickle.PicklingError, AttributeError, TypeError) as err:
                self.close()
                raise ValueError(
                    f"env_fns must be picklable (by cloudpickle) to reach the subprocesses "
                    f"({err}); build the env inside the function instead of capturing "
                    "objects such as locks, files or sockets, or use vec='sync'"
                ) from err
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._set_spaces(*self._gather()[0])

    def _recv(self, w: int, stepping: bool = False) -> Any:
        conn, proc = self._conns[w], self._procs[w]
        sl = self._slices[w]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not conn.poll(self.poll_interval):
            if not proc.is_alive():
                raise RuntimeError(
                    f"worker for envs {self.env_indices[sl]} died (exit code {proc.exitcode})"
                )
            if self.timeout is None:
                continue
            if stepping:  # the limit applies to each env's step() (the worker steps several)
                stuck = self._watches[w].stuck()
                if stuck is not None and stuck[1] > self.timeout:
                    raise RuntimeError(
                        f"env {stuck[0]} did not return from step() within step_timeout="
                        f"{self.timeout:g} s; the run stops (fix the env, or raise "
                        "step_timeout if its steps are that slow)"
                    )
            elif deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker for envs {self.env_indices[sl]} did not answer within {self.timeout} s"
                )
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as err:
            proc.join(timeout=1.0)
            raise RuntimeError(
                f"worker for envs {self.env_indices[sl]} died (exit code {proc.exitcode})"
            ) from err
        if status == "error":
            raise RuntimeError(f"{payload[0]}\n--- worker traceback ---\n{payload[1]}")
        return payload

    def _gather(self, stepping: bool = False) -> list[Any]:
        if self._closed:
            raise RuntimeError("AsyncVecEnv is closed")
        try:
            return [self._recv(w, stepping) for w in range(len(self._conns))]
        except RuntimeError:
            self.close()  # the envs' state is undefined after a failure
            raise

    def _send_all(self, cmd: str, parts: Sequence[Any]) -> None:
        if self._closed:
            raise RuntimeError("AsyncVecEnv is closed")
        for conn, part in zip(self._conns, parts, strict=True):
            conn.send((cmd, part))

    def reset(self, seeds: Sequence[int | None] | None = None) -> Any:
        seeds = self._seeds(seeds)
        self._send_all("reset", [seeds[sl] for sl in self._slices])
        res = self._gather()
        self.masks = _join_masks([r[1] for r in res])
        return obs_tree.concat([r[0] for r in res])

    def step(self, actions: np.ndarray) -> StepResult:
        self._send_all("step", [actions[sl] for sl in self._slices])
        res = self._gather(stepping=True)
        self.masks = _join_masks([r[6] for r in res])
        if len(res) == 1:
            obs, rew, term, trunc, final, infos, _ = res[0]
            return obs, rew, term, trunc, self.no_final if final is None else final, infos
        obs = obs_tree.concat([r[0] for r in res])
        rew, term, trunc = (np.concatenate(part) for part in list(zip(*res, strict=True))[1:4])
        final = self.no_final
        if any(r[4] is not None for r in res):
            final = obs_tree.zeros_like(self.no_final)
            for sl, r in zip(self._slices, res, strict=True):
                if r[4] is not None:
                    obs_tree.put(final, sl, r[4])
        infos = None if res[0][5] is None else [i for r in res for i in r[5]]
        return obs, rew, term, trunc, final, infos

    def get_state(self) -> list[bytes]:
        self._send_all("get_state", [None] * len(self._conns))
        return [blob for part in self._gather() for blob in part]

    def set_state(self, state: Sequence[bytes]) -> None:
        self._check_state(state)
        self._send_all("set_state", [list(state[sl]) for sl in self._slices])
        self._gather()

    def close(self) -> None:
        """Stop the workers (terminating any that do not exit within a second)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        stop_workers(list(zip(self._conns, self._procs, strict=True)))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
