"""Dependency-free TensorBoard event-file writer for scalar summaries.

TensorBoard reads *event files*: a sequence of TFRecord-framed, protobuf-encoded
``Event`` messages. This module writes that format by hand so runtime code needs
neither ``tensorboard`` nor ``protobuf``; only the tests use TensorBoard itself to
read the files back.

TFRecord framing of one record::

    uint64  length            (little endian)
    uint32  masked_crc32c(length bytes)
    bytes   data[length]
    uint32  masked_crc32c(data)

The subset of the ``Event`` protobuf that is encoded::

    Event {
      double  wall_time    = 1;
      int64   step         = 2;
      string  file_version = 3;   // first record only: "brain.Event:2"
      Summary summary      = 5;   // Summary { repeated Value value = 1; }
      SessionLog session_log = 7; // SessionLog { SessionStatus status = 1; }
    }
    Value { string tag = 1; float simple_value = 2; }
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

__all__ = ["SummaryWriter", "crc32c", "masked_crc32c"]

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial 0x1EDC6F41, bit-reflected.
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_FLOAT32_MAX = 3.4028234663852886e38


def _make_crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """Computes the CRC32C (Castagnoli) checksum of ``data``.

    Args:
        data: Bytes to checksum.
        crc: A previous checksum to continue from (for incremental use).

    Returns:
        The unsigned 32-bit checksum, e.g. ``crc32c(b"123456789") == 0xE3069283``.
    """
    table = _CRC32C_TABLE
    crc ^= _U32
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    """Returns the TFRecord "masked" CRC32C of ``data`` (rotate right 15, add a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


# --------------------------------------------------------------------------- protobuf


def _varint(value: int) -> bytes:
    """Encodes an int as a protobuf varint (negative ints as 64-bit two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _to_float32(value: float) -> float:
    """Maps out-of-range finite values to +-inf, as a C cast to float would."""
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        return math.copysign(math.inf, value)
    return value


def _encode_event(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalar: tuple[str, float] | None = None,
    session_start: bool = False,
) -> bytes:
    parts = [_key(1, 1) + struct.pack("<d", wall_time), _key(2, 0) + _varint(step)]
    if file_version is not None:
        parts.append(_length_delimited(3, file_version.encode("utf-8")))
    if scalar is not None:
        tag, value = scalar
        value_msg = _length_delimited(1, tag.encode("utf-8")) + _key(2, 5)
        value_msg += struct.pack("<f", _to_float32(value))
        parts.append(_length_delimited(5, _length_delimited(1, value_msg)))
    if session_start:
        parts.append(_length_delimited(7, _key(1, 0) + _varint(1)))  # status = START
    return b"".join(parts)


def _frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# --------------------------------------------------------------------------- writer


def _as_step(step: Any) -> int:
    try:
        return int(step.__index__())
    except (AttributeError, TypeError):
        raise ValueError(
            f"step must be an integer, got {step!r} ({type(step).__name__}); "
            "pass the global step as an int"
        ) from None


class SummaryWriter:
    """Writes scalar summaries to a TensorBoard event file in ``log_dir``.

    The file is named ``events.out.tfevents.<int time>.<hostname>``; if that name is
    already taken (two writers started in the same second) ``.<pid>.<n>`` is
    appended. Records are buffered and written to disk on :meth:`flush`, on
    :meth:`close`, and automatically once ``flush_secs`` have passed since the last
    flush.

    Example:
        >>> with SummaryWriter("runs/exp") as w:  # doctest: +SKIP
        ...     w.add_scalar("loss", 0.5, step=1)

    Args:
        log_dir: Directory for the event file; created if missing.
        flush_secs: Flush automatically when a scalar is added at least this many
            seconds after the previous flush.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, flush_secs: float = 10.0) -> None:
        if not flush_secs >= 0:
            raise ValueError(
                f"flush_secs must be a non-negative number of seconds, got {flush_secs!r}"
            )
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._flush_secs = float(flush_secs)
        now = time.time()
        base = f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        path = self.log_dir / base
        n = 0
        while True:
            try:
                self._file = open(path, "xb")  # noqa: SIM115 - closed in close()
                break
            except FileExistsError:
                n += 1
                path = self.log_dir / f"{base}.{os.getpid()}.{n}"
        self.path = path
        self._buffer: list[bytes] = []
        self._last_flush = time.monotonic()
        self._write(_encode_event(now, 0, file_version="brain.Event:2"))
        self.flush()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._file.closed

    def _write(self, event: bytes) -> None:
        if self._file.closed:
            raise RuntimeError(f"SummaryWriter for {self.path} is closed; create a new one")
        self._buffer.append(_frame(event))
        if time.monotonic() - self._last_flush >= self._flush_secs:
            self.flush()

    def add_scalar(
        self, tag: str, value: float, step: int, *, wall_time: float | None = None
    ) -> None:
        """Records one scalar value.

        Args:
            tag: Non-empty series name, e.g. ``"train/episode_return"``.
            value: Anything ``float()`` accepts (Python/NumPy numbers, 1-element
                tensors). Stored as float32, as TensorBoard does.
            step: Integer global step (x axis in TensorBoard).
            wall_time: Seconds since the epoch; defaults to now.

        Raises:
            ValueError: If the tag is not a non-empty string, the value is not a
                number or the step is not an integer.
        """
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag must be a non-empty string, got {tag!r}")
        try:
            fvalue = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"value for tag {tag!r} must be a real number, got {value!r} "
                f"({type(value).__name__}); pass a float or a 1-element tensor"
            ) from None
        wt = time.time() if wall_time is None else float(wall_time)
        self._write(_encode_event(wt, _as_step(step), scalar=(tag, fvalue)))

    def add_session_start(self, step: int) -> None:
        """Marks a (re)start of the run at ``step``.

        TensorBoard discards previously written events with a step ``>= step``
        when it sees this record, so after resuming from a checkpoint at step ``S``
        call ``add_session_start(S + 1)`` to hide the stale tail of the old run.

        Args:
            step: First step of the restarted run.
        """
        self._write(_encode_event(time.time(), _as_step(step), session_start=True))

    def flush(self) -> None:
        """Writes buffered records to the event file."""
        if self._file.closed:
            return
        if self._buffer:
            self._file.write(b"".join(self._buffer))
            self._buffer.clear()
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flushes and closes the file. Calling it again is a no-op."""
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: don't lose buffered scalars
        try:
            self.close()
        except Exception:
            pass
