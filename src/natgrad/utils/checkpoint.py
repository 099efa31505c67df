"""Crash-safe checkpoint saving and validated loading.

A natgrad checkpoint is a ``dict`` saved with :func:`torch.save` that holds at least
``format_version`` (an int, see :data:`CHECKPOINT_FORMAT_VERSION`) and ``step`` (the
integer training step it was taken at, used to truncate ``progress.csv`` on resume).
Everything else (model/optimiser state dicts, ``env_id``, ``algo``, observation and
action shapes, RNG state, ...) is up to the caller; :func:`load_checkpoint` can check
any top-level field against expected values.

Security note: :func:`load_checkpoint` calls ``torch.load(weights_only=False)``
because checkpoints contain plain Python objects (configs, RNG state) besides
tensors. That unpickles arbitrary objects and can execute code, so only load
checkpoints that natgrad itself wrote; never load files from untrusted sources.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "REQUIRED_KEYS",
    "load_checkpoint",
    "save_atomic",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "step")


def _fsync_dir(directory: Path) -> None:
    """Makes a rename durable (POSIX); silently skipped where unsupported."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Saves ``obj`` with :func:`torch.save` so that ``path`` is never partial.

    The object is written to a temporary file in the same directory, flushed and
    ``fsync``-ed, then moved over ``path`` with :func:`os.replace` (atomic on POSIX
    and Windows). If anything fails (or the process is interrupted) before the
    rename, the previous file at ``path`` is untouched and the temporary file is
    removed.

    Args:
        obj: Any object ``torch.save`` accepts.
        path: Destination file; its parent directory is created if missing.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    try:
        return atomic_write(path, lambda f: torch.save(obj, f), binary=True)
    except RuntimeError as err:  # torch's zip writer reports a short write this way
        if "PytorchStreamWriter" not in str(err) and "unexpected pos" not in str(err):
            raise
        folder = Path(path).parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        raise OSError(
            errno.ENOSPC,
            f"writing {path} failed ({str(err).splitlines()[0]}); {free:,} bytes are free "
            "on its disk: it is probably full. The previous file there is untouched",
            str(path),
        ) from err


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Any], None], *, binary: bool = False
) -> Path:
    """Write a file so that ``path`` holds either its old or its complete new content.

    ``write(f)`` fills a temporary file in the same directory, which is flushed,
    fsynced and renamed over ``path``; on any error the temporary file is removed
    and ``path`` is untouched.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(p, lambda f: f.write("hi")).read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        f: Any = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="", encoding="utf-8")
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Atomically saves a checkpoint dict, stamping ``format_version``.

    Args:
        state: Checkpoint contents; must contain an integer ``step``. A
            ``format_version`` is added (or must equal the current one).
        path: Destination file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``state`` is not a mapping, lacks an integer ``step`` or has a
            different ``format_version``.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a dict of checkpoint fields, got {type(state).__name__}")
    raw_step: Any = state.get("step")
    try:
        if isinstance(raw_step, bool):
            raise TypeError
        step = operator.index(raw_step)
    except TypeError:
        raise ValueError(
            f"state['step'] must be the integer training step, got {raw_step!r}; "
            "add step=<int> to the checkpoint"
        ) from None
    version = state.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"state['format_version'] is {version!r} but this natgrad writes version "
            f"{CHECKPOINT_FORMAT_VERSION}; drop the key and let save_checkpoint set it"
        )
    return save_atomic({**state, "step": step, "format_version": CHECKPOINT_FORMAT_VERSION}, path)


def _normalise(value: Any) -> Any:
    """Makes shapes comparable: tuples, lists, ``torch.Size``, arrays -> tuples."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    elif hasattr(value, "tolist") and hasattr(value, "shape"):  # numpy array/scalar
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(_normalise(a) == _normalise(b))
    except (RuntimeError, ValueError, TypeError):
        return False


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected: Mapping[str, Any] | None = None,
    required: Iterable[str] = (),
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Loads and validates a natgrad checkpoint. Never modifies the file.

    Uses ``torch.load(weights_only=False)``: only load checkpoints natgrad wrote
    (see the module docstring).

    Args:
        path: Checkpoint file.
        expected: Top-level fields that must equal the given values, e.g.
            ``{"env_id": "CartPole-v1", "algo": "trpo", "obs_shape": (4,)}``.
            Sequences compare by content (a list equals the same tuple).
        required: Extra top-level keys that must be present, on top of
            :data:`REQUIRED_KEYS`.
        map_location: Passed to :func:`torch.load`; defaults to ``"cpu"``.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is corrupt or not a checkpoint, lacks a required
            key, has an unsupported ``format_version``, or an ``expected`` field
            does not match (the message names the field, the checkpoint's value and
            the expected one).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {str(path)!r}; check the path or start a fresh run"
        )
    if not path.is_file():
        raise ValueError(f"checkpoint path {str(path)!r} is not a file; pass the .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(
            f"the checkpoint at {str(path)!r} is corrupt or truncated and could not be "
            f"loaded ({type(err).__name__}: {err}); nothing was changed. Resume from "
            "an earlier checkpoint or start a fresh run"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"the file at {str(path)!r} holds a {type(ckpt).__name__}, not a natgrad "
            "checkpoint dict; nothing was changed"
        )
    missing = [k for k in dict.fromkeys([*REQUIRED_KEYS, *required]) if k not in ckpt]
    if missing:
        raise ValueError(
            f"the checkpoint at {str(path)!r} lacks required keys {missing} "
            f"(it has {sorted(map(str, ckpt))}); it was not written by "
            "natgrad.utils.checkpoint.save_checkpoint or is from another tool"
        )
    version = ckpt["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(
            f"the checkpoint at {str(path)!r} has an invalid format_version {version!r}"
        )
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"the checkpoint at {str(path)!r} has format_version {version}, newer than "
            f"the {CHECKPOINT_FORMAT_VERSION} this natgrad reads; upgrade natgrad"
        )
    if version < 1:
        raise ValueError(f"the checkpoint at {str(path)!r} has an invalid format_version {version}")
    for field, want in (expected or {}).items():
        if field not in ckpt:
            raise ValueError(
                f"the checkpoint at {str(path)!r} has no field {field!r} to compare with "
                f"the expected {want!r}; it was saved without it"
            )
        got = ckpt[field]
        if not _equal(got, want):
            raise ValueError(
                f"checkpoint field {field!r} mismatch: the checkpoint at {str(path)!r} "
                f"has {got!r} but {want!r} was expected; resume with the settings it "
                "was trained with or start a fresh run"
            )
    return ckpt
