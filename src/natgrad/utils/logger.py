"""Per-run metric logging: a ``progress.csv`` file plus TensorBoard scalars.

TensorBoard files are written by ``torch.utils.tensorboard.SummaryWriter``, which needs
the ``tensorboard`` package (``pip install natgrad[tensorboard]``): with
``tensorboard=None`` (the default) they are written when it is installed and silently
skipped otherwise; ``tensorboard=True`` makes its absence an error that says so.

CSV layout: the first two columns are always ``step`` (the integer passed to
:meth:`RunLogger.log`) and ``wall_time`` (seconds since the epoch); the metric
columns follow in first-seen order.

Column policy: by default the header grows. When :meth:`RunLogger.log` receives a
key that is not yet a column, the whole file is rewritten with the extended header
(to a temporary file that then atomically replaces ``progress.csv``); earlier rows
get empty cells for the new column, which :func:`read_progress` returns as NaN.
Keys missing from a row are likewise written as empty cells. Pass ``fieldnames``
to fix the columns up front instead; unknown keys then raise ``ValueError`` and
the file is never rewritten while logging.

Rows are flushed after every call, so a crash loses at most the row being written;
a partial trailing line is ignored by :func:`read_progress` and dropped when the
run is resumed.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from natgrad.utils.checkpoint import atomic_write

__all__ = ["PROGRESS_FILE", "RunLogger", "read_progress"]

PROGRESS_FILE = "progress.csv"
_RESERVED = ("step", "wall_time")


def _as_int_step(step: Any) -> int:
    try:
        return int(step.__index__())
    except (AttributeError, TypeError):
        raise ValueError(
            f"step must be an integer, got {step!r} ({type(step).__name__}); pass an int"
        ) from None


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Returns the header and the well-formed rows (right length, integer step)."""
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        return [], []
    lines = text.splitlines(keepends=True)
    if not lines[-1].endswith(("\n", "\r")):
        lines = lines[:-1]  # partial row from a crash mid-write
    reader = csv.reader(lines)
    header = next(reader, [])
    check_step = bool(header) and header[0] == "step"
    rows = []
    for row in reader:
        if len(row) != len(header):
            continue
        if check_step:
            try:
                int(row[0])
            except ValueError:
                continue
        rows.append(row)
    return header, rows


def _write_csv_atomic(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    def write(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

    atomic_write(path, write)


class RunLogger:
    """Appends metrics to ``<run_dir>/progress.csv`` and to TensorBoard.

    See the module docstring for the CSV column policy.

    Example:
        >>> with RunLogger("runs/cartpole_trpo") as log:  # doctest: +SKIP
        ...     log.log(1, {"env_steps": 2048, "episode_return": 21.5})

    Args:
        run_dir: Run directory; created if missing. The TensorBoard event file is
            written directly into it, so ``tensorboard --logdir runs/`` shows one
            run per run directory.
        tensorboard: Also write every metric as a TensorBoard scalar (tag = key): ``True``
            (an error if the tensorboard package is missing), ``False``, or ``None``
            (when it is installed).
        resume: Continue an existing ``progress.csv``. Call :meth:`truncate_after`
            with the checkpoint's step to drop rows logged after that checkpoint.
        fieldnames: Fixed metric columns (excluding ``step``/``wall_time``). If
            given, keys outside this set raise ``ValueError``. On resume, columns
            already in the file are also allowed.

    Raises:
        ValueError: If ``resume`` is False but ``run_dir`` already holds a
            non-empty ``progress.csv``, or ``fieldnames`` uses a reserved name.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        tensorboard: bool | None = None,
        resume: bool = False,
        fieldnames: Iterable[str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / PROGRESS_FILE
        self._fixed = fieldnames is not None
        wanted = list(dict.fromkeys(fieldnames or ()))
        for name in wanted:
            self._check_key(name)

        self._file: TextIO | None = None
        self._tb: Any = None
        writer_cls = _summary_writer(tensorboard)
        existing = self.csv_path.exists() and self.csv_path.stat().st_size > 0
        if existing and not resume:
            raise ValueError(
                f"run_dir {str(self.run_dir)!r} already contains {PROGRESS_FILE}; pass "
                "resume=True to continue that run or choose a new run_dir"
            )
        header: list[str] = []
        rows: list[list[str]] = []
        if existing:
            header, rows = _read_csv(self.csv_path)
            if header[: len(_RESERVED)] != list(_RESERVED):
                raise ValueError(
                    f"{self.csv_path} does not start with columns {list(_RESERVED)} "
                    f"(found {header[:2]}); it was not written by RunLogger, "
                    "so it cannot be resumed; choose a new run_dir"
                )
        self._columns = header[len(_RESERVED) :]
        self._columns += [c for c in wanted if c not in self._columns]
        # Rewrite once: fresh file, new fixed columns, or a partial trailing row.
        self._rewrite(rows)
        self._tb = writer_cls(str(self.run_dir)) if writer_cls is not None else None

    @property
    def fieldnames(self) -> list[str]:
        """The current CSV columns, including ``step`` and ``wall_time``."""
        return [*_RESERVED, *self._columns]

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"metric names must be non-empty strings, got {key!r}")
        if key in _RESERVED:
            raise ValueError(
                f"metric name {key!r} is reserved (RunLogger writes {list(_RESERVED)} "
                "itself); rename the metric"
            )

    def _rewrite(self, rows: Iterable[list[str]]) -> None:
        if self._file is not None:
            self._file.close()
        _write_csv_atomic(self.csv_path, self.fieldnames, rows)
        self._file = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends one row and writes each metric to TensorBoard.

        Args:
            step: Integer step of this row (e.g. the iteration number); keep it
                increasing so that :meth:`truncate_after` works on resume.
            metrics: Metric name -> value; values may be anything ``float()``
                accepts (NaN/inf allowed).

        Raises:
            ValueError: If the step is not an integer, a name is reserved/invalid or
                (with fixed ``fieldnames``) unknown, or a value is not a number.
        """
        istep = _as_int_step(step)
        if self._file is None:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed; create a new one")
        values: dict[str, float] = {}
        for key, value in metrics.items():
            self._check_key(key)
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"metric {key!r} must be a real number, got {value!r} "
                    f"({type(value).__name__}); log floats or 1-element tensors"
                ) from None
        new = [k for k in values if k not in self._columns]
        if new:
            if self._fixed:
                raise ValueError(
                    f"metrics {new} are not among the fixed fieldnames {self._columns}; "
                    "add them to fieldnames= when creating the RunLogger"
                )
            _, rows = _read_csv(self.csv_path)
            self._columns += new
            self._rewrite([r + [""] * len(new) for r in rows])
        row = [str(istep), repr(time.time())]
        row += [repr(values[c]) if c in values else "" for c in self._columns]
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, istep)

    def truncate_after(self, step: int) -> int:
        """Drops CSV rows with a step greater than ``step`` (for resuming).

        Also tells TensorBoard to hide scalars logged after ``step`` by the
        interrupted run (a new event file with ``purge_step = step + 1``).

        Args:
            step: The step of the checkpoint the run resumes from.

        Returns:
            The number of rows removed.
        """
        istep = _as_int_step(step)
        if self._file is None:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed; create a new one")
        self._file.flush()
        _, rows = _read_csv(self.csv_path)
        kept = [r for r in rows if int(r[0]) <= istep]
        self._rewrite(kept)
        if self._tb is not None:
            writer_cls = type(self._tb)
            self._tb.close()
            self._tb = writer_cls(str(self.run_dir), purge_step=istep + 1)
        return len(rows) - len(kept)

    def flush(self) -> None:
        """Flushes the CSV and TensorBoard files."""
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Closes all files. Calling it again is a no-op."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_writer(tensorboard: bool | None) -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or ``None`` when off or not installed."""
    if tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        if tensorboard:
            raise ValueError(
                "tensorboard=True needs the tensorboard package, which is not installed "
                f"({err}); `pip install tensorboard` (or natgrad[tensorboard]), or turn "
                "TensorBoard logging off"
            ) from None
        return None
    return SummaryWriter


def read_progress(run_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a run's ``progress.csv`` into columns.

    Args:
        run_dir: The run directory, or the path of a ``progress.csv`` file.

    Returns:
        Column name -> 1-D array, in file order. ``step`` is ``int64``; every other
        column is ``float64`` with empty or non-numeric cells as NaN. Malformed rows
        (e.g. a partial last line after a crash) are skipped.

    Raises:
        FileNotFoundError: If there is no ``progress.csv``.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / PROGRESS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {PROGRESS_FILE} at {str(path)!r}; pass a run directory written by RunLogger"
        )
    header, rows = _read_csv(path)

    def to_float(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return math.nan

    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        if j == 0 and name == "step":
            out[name] = np.array([int(r[0]) for r in rows], dtype=np.int64)
        else:
            out[name] = np.array([to_float(r[j]) for r in rows], dtype=np.float64)
    return out
