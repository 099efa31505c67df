"""Run-directory infrastructure: logging, TensorBoard, checkpoints, progress, plots."""

from natgrad.utils.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    atomic_write,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
)
from natgrad.utils.logger import RunLogger, read_progress
from natgrad.utils.plotting import interpolate_mean_std, plot_learning_curves, run_label
from natgrad.utils.progress import ProgressBar
from natgrad.utils.tbwriter import SummaryWriter, crc32c, masked_crc32c

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "ProgressBar",
    "RunLogger",
    "SummaryWriter",
    "atomic_write",
    "crc32c",
    "interpolate_mean_std",
    "load_checkpoint",
    "masked_crc32c",
    "plot_learning_curves",
    "read_progress",
    "run_label",
    "save_atomic",
    "save_checkpoint",
]
