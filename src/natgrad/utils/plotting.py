"""Learning-curve plots from run directories (mean +- std across seeds).

Matplotlib is imported lazily and only through its object-oriented Agg API
(:class:`~matplotlib.figure.Figure` + ``FigureCanvasAgg``), so plotting works
headless and never changes the global pyplot backend of the caller.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from natgrad.utils.logger import PROGRESS_FILE, read_progress

__all__ = ["interpolate_mean_std", "plot_learning_curves", "run_label"]

_SEED_SUFFIX = re.compile(r"[-_.]?seed[-_]?\d+$", re.IGNORECASE)


def _config_name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):  # e.g. {"env": {"id": "CartPole-v1", ...}}
        for key in ("id", "name"):
            if isinstance(value.get(key), str) and value[key]:
                return value[key]
    return None


def run_label(run_dir: str | os.PathLike[str]) -> str:
    """Returns the group label of a run: ``"<env> / <algo>"`` or the directory name.

    The env and algorithm are read from ``config.json`` in the run directory (keys
    ``env_id`` or ``env``, and ``algo`` or ``algorithm``). Without a usable config,
    the directory name is used with a trailing seed suffix (``_seed3``, ``-seed-3``)
    removed, so ``cartpole_seed0`` and ``cartpole_seed1`` form one group.

    Args:
        run_dir: The run directory.

    Returns:
        The label.
    """
    run_dir = Path(run_dir)
    config: Any = None
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if isinstance(config, dict):
        env = _config_name(config.get("env_id")) or _config_name(config.get("env"))
        algo = _config_name(config.get("algo")) or _config_name(config.get("algorithm"))
        names = [n for n in (env, algo) if n]
        if names:
            return " / ".join(names)
    name = run_dir.resolve().name
    return _SEED_SUFFIX.sub("", name) or name


def interpolate_mean_std(
    curves: Sequence[tuple[Any, Any]], *, num_points: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolates curves onto a common x grid and averages them.

    Each curve is sorted by x and pairs with a non-finite x or y are dropped. The
    grid spans the x range that *all* curves cover (no extrapolation), with
    ``num_points`` evenly spaced points (one point if that range is a single x).

    Args:
        curves: ``(x, y)`` pairs of equal-length 1-D array-likes, one per seed.
        num_points: Number of grid points.

    Returns:
        ``(grid, mean, std)``; ``std`` is the population standard deviation
        (``ddof=0``) across curves, so it is 0 for a single curve.

    Raises:
        ValueError: If there are no curves, a curve is malformed or empty, or the
            curves' x ranges do not overlap.
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}")
    if len(curves) == 0:
        raise ValueError("curves is empty; pass at least one (x, y) pair")
    cleaned = []
    for i, (xs, ys) in enumerate(curves):
        xs = np.asarray(xs, dtype=np.float64).ravel()
        ys = np.asarray(ys, dtype=np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(
                f"curve {i} has {xs.size} x values but {ys.size} y values; they must match"
            )
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        if xs.size == 0:
            raise ValueError(f"curve {i} has no finite (x, y) points")
        order = np.argsort(xs, kind="stable")
        cleaned.append((xs[order], ys[order]))
    lo = max(float(xs[0]) for xs, _ in cleaned)
    hi = min(float(xs[-1]) for xs, _ in cleaned)
    if lo > hi:
        raise ValueError(
            f"the curves' x ranges do not overlap (latest start {lo:g} > earliest end "
            f"{hi:g}); compare runs that cover a common x range"
        )
    grid = np.linspace(lo, hi, num_points) if hi > lo else np.array([lo])
    stacked = np.stack([np.interp(grid, xs, ys) for xs, ys in cleaned])
    return grid, stacked.mean(axis=0), stacked.std(axis=0)


def _load_curve(run_dir: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    if not (run_dir / PROGRESS_FILE).is_file():
        raise ValueError(
            f"run directory {str(run_dir)!r} has no {PROGRESS_FILE}; pass directories "
            "written by `natgrad train`"
        )
    data = read_progress(run_dir)
    for column in (x, y):
        if column not in data:
            raise ValueError(
                f"column {column!r} is not in {str(run_dir / PROGRESS_FILE)!r}; "
                f"available columns: {', '.join(data) or '(none)'}"
            )
    return data[x], data[y]


def plot_learning_curves(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    x: str = "env_steps",
    y: str = "episode_return",
    label: str | Callable[[Path], str] | None = None,
    title: str | None = None,
    num_points: int = 200,
) -> Path:
    """Plots mean +- std learning curves, one line per group of runs, to a PNG.

    Runs are grouped by label (seeds of the same experiment share a label); each
    group's curves are interpolated onto a common grid (see
    :func:`interpolate_mean_std`) and drawn as the mean with a shaded +-1 std band.

    Args:
        run_dirs: Run directories, each with a ``progress.csv``.
        out: Output PNG path; parent directories are created.
        x: Column for the x axis.
        y: Column for the y axis.
        label: ``None`` to group by :func:`run_label`; a string to put all runs in
            one group with that name; or a callable ``Path -> str``.
        title: Figure title; defaults to ``"<y> vs <x>"``.
        num_points: Grid points per curve.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``run_dirs`` is empty, a directory has no ``progress.csv``, a
            column is missing (the message lists the available ones) or has no
            finite values, or a group's runs do not overlap in ``x``.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if len(run_dirs) == 0:
        raise ValueError("run_dirs is empty; pass at least one run directory")
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for run_dir in map(Path, run_dirs):
        xs, ys = _load_curve(run_dir, x, y)
        if callable(label):
            name = str(label(run_dir))
        elif label is not None:
            name = str(label)
        else:
            name = run_label(run_dir)
        groups.setdefault(name, []).append((xs, ys))

    summaries = {}
    for name, curves in groups.items():
        try:
            summaries[name] = interpolate_mean_std(curves, num_points=num_points)
        except ValueError as err:
            raise ValueError(f"cannot average the runs labelled {name!r}: {err}") from None

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (grid, mean, std) in summaries.items():
        n = len(groups[name])
        marker = "o" if grid.size == 1 else None
        (line,) = ax.plot(grid, mean, marker=marker, label=f"{name} (n={n})")
        if n > 1:
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25)
    ax.set_title(title if title is not None else f"{y} vs {x}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
