"""Run-directory infrastructure: CSV/TensorBoard logging, atomic checkpoints, plots."""

from natgrad.utils.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    atomic_write,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
)
from natgrad.utils.logger import RunLogger, read_progress
from natgrad.utils.plotting import interpolate_mean_std, plot_learning_curves, run_label

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "RunLogger",
    "atomic_write",
    "interpolate_mean_std",
    "load_checkpoint",
    "plot_learning_curves",
    "read_progress",
    "run_label",
    "save_atomic",
    "save_checkpoint",
]
