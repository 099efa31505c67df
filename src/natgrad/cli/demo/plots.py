"""The seed article's pictures, drawn from :mod:`natgrad.cli.demo.maths`'s records with
Matplotlib's Agg canvas, imported lazily (the global pyplot backend is never touched)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from natgrad.cli.demo.maths import _DTYPE, FitPath, GaussianShift, _params, gaussian_model
from natgrad.distributions import DiagGaussian

__all__ = ["check_png_path", "plot_fit_paths", "plot_gaussians"]


def check_png_path(out: str | os.PathLike[str], name: str = "out") -> Path:
    """Check that ``out`` can name a new PNG file: a ``.png`` name in an existing directory."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ValueError(f"{name} must be a file path ending in .png, got {out!r}")
    path = Path(out).expanduser()
    if path.suffix.lower() != ".png":
        raise ValueError(f"{name} must end in .png, got {os.fspath(out)!r}; e.g. {name} plot.png")
    if path.is_dir():
        raise ValueError(f"{name} {os.fspath(out)!r} is a directory; give a file name inside it")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"{name} {os.fspath(out)!r}: directory {os.fspath(parent)!r} does not exist; "
            "create it first or choose another path"
        )
    return path


def _save(fig: object, out: str | os.PathLike[str]) -> Path:
    """Write the figure atomically (a temporary file renamed into place): all or nothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = check_png_path(out)
    FigureCanvasAgg(fig)  # type: ignore[arg-type]
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=".natgrad-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)  # type: ignore[attr-defined]
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _pdf(x: Tensor, mean: float, sigma: float) -> Tensor:
    dist = gaussian_model(_params(mean, sigma))
    return dist.log_prob(x.unsqueeze(-1)).exp()


def plot_gaussians(shifts: Sequence[GaussianShift], out: str | os.PathLike[str]) -> Path:
    """Draw each pair in its own panel on a shared μ axis, annotated with its three distances.

    Returns the path written (a PNG).
    """
    from matplotlib.figure import Figure

    if not shifts:
        raise ValueError("shifts is empty; pass the records of gaussian_shift, e.g. for 0.3 and 3")
    check_png_path(out)
    reach = max(max(abs(s.mu_old), abs(s.mu_new)) + 3.5 * s.sigma for s in shifts)
    x = torch.linspace(-reach, reach, 2001, dtype=_DTYPE)
    fig = Figure(figsize=(8.5, 3.3 * len(shifts) + 0.8), layout="constrained")
    axes = fig.subplots(len(shifts), 1, sharex=True, squeeze=False)[:, 0]
    for ax, s in zip(axes, shifts, strict=True):
        old, new = _pdf(x, s.mu_old, s.sigma), _pdf(x, s.mu_new, s.sigma)
        top = float(old.max())
        for pdf, mu, color, label in (
            (old, s.mu_old, "tab:blue", "p_old"),
            (new, s.mu_new, "tab:orange", "p_new"),
        ):
            ax.fill_between(x.numpy(), pdf.numpy(), color=color, alpha=0.25, lw=0)
            ax.plot(
                x.numpy(),
                pdf.numpy(),
                color=color,
                lw=2,
                label=f"{label} = N({mu:+g}, {s.sigma:g}²)",
            )
            ax.axvline(mu, color=color, ls="--", lw=1)
        ax.annotate(
            "",
            xy=(s.mu_new, 1.08 * top),
            xytext=(s.mu_old, 1.08 * top),
            arrowprops={"arrowstyle": "->", "lw": 1.8, "color": "black"},
        )
        ax.text(
            0.5 * (s.mu_old + s.mu_new),
            1.12 * top,
            f"Δμ = {s.mu_new - s.mu_old:g}",
            ha="center",
            va="bottom",
        )
        f00 = float(s.fisher[0, 0])
        note = (
            f"Euclidean distance ‖δ‖ = {float(s.euclidean_distance):.3g}\n"
            f"KL(p_old ‖ p_new) = {float(s.kl):.4g}\n"
            f"Fisher distance √(δᵀFδ) = {float(s.fisher_distance):.4g}\n"
            f"F = diag(1/σ², 2) = diag({f00:.4g}, {float(s.fisher[1, 1]):.3g})"
        )
        ax.text(
            0.015,
            0.95,
            note,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=10,
            family="monospace",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9},
        )
        ax.set_title(f"σ = {s.sigma:g}", loc="left", fontweight="bold")
        ax.set_ylim(0, 1.3 * top)
        ax.set_ylabel("density")
        ax.legend(loc="upper right", framealpha=0.9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("x")
    fig.suptitle(
        "The same step in the mean (−1 → +1) changes a narrow Gaussian far more than a wide one",
        fontsize=12,
    )
    return _save(fig, out)


def plot_fit_paths(
    paths: Sequence[FitPath], target: tuple[float, float], out: str | os.PathLike[str]
) -> Path:
    """Draw the optimisers' paths over the contours of the loss in ``(μ, log σ)`` space."""
    from matplotlib.figure import Figure

    check_png_path(out)
    pts = torch.cat([p.points for p in paths] + [torch.tensor([target], dtype=_DTYPE)])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.15 * (hi - lo) + 0.2
    mu = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), 200, dtype=_DTYPE)
    ls = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), 200, dtype=_DTYPE)
    grid_mu, grid_ls = torch.meshgrid(mu, ls, indexing="xy")
    goal = gaussian_model([torch.tensor(float(t), dtype=_DTYPE) for t in target])
    model = DiagGaussian(grid_mu.reshape(-1, 1), grid_ls.reshape(-1, 1))
    tgt = DiagGaussian(goal.mean.expand(model.mean.shape), goal.log_std.expand(model.mean.shape))
    loss = tgt.kl(model).reshape(grid_mu.shape)
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax = fig.subplots()
    top = min(float(loss.max()), 100.0)
    levels = torch.logspace(math.log10(0.01), math.log10(top), 10, dtype=_DTYPE).numpy()
    cs = ax.contour(
        grid_mu.numpy(), grid_ls.numpy(), loss.numpy(), levels=levels, cmap="viridis", alpha=0.7
    )
    ax.clabel(cs, fontsize=8, fmt="%.2g")
    for path, color in zip(paths, ("tab:red", "tab:green"), strict=False):
        p = path.points.numpy()
        label = f"{path.name}: final KL {float(path.losses[-1]):.3g}"
        ax.plot(p[:, 0], p[:, 1], "o-", color=color, ms=3, lw=1.5, label=label)
    start = paths[0].points[0]
    ax.plot(float(start[0]), float(start[1]), "ks", ms=8, label="start")
    ax.plot(target[0], target[1], "*", color="gold", mec="black", ms=16, label="target")
    ax.set_xlabel("μ")
    ax.set_ylabel("log σ")
    steps = paths[0].points.shape[0] - 1
    ax.set_title(
        f"Fitting N(μ, σ²) by minimising KL(p* ‖ p_θ): {steps} steps of the same learning rate\n"
        "contours: the loss (log-spaced levels)"
    )
    ax.legend(loc="best", framealpha=0.9)
    return _save(fig, out)
