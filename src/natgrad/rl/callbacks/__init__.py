"""Callbacks for :meth:`~natgrad.rl.TRPO.learn` (Stable-Baselines3's protocol).

Everything around the learn loop is a callback: progress (:class:`ProgressBarCallback`),
logging (:class:`LoggerCallback`), checkpoints (:class:`CheckpointCallback`), periodic
evaluation (:class:`EvalCallback`, :class:`StopTrainingOnRewardThreshold`) and Ctrl-C
handling (:class:`InterruptCallback`); compose them with :class:`CallbackList`.
"""

from natgrad.rl.callbacks.base import (
    BaseCallback,
    CallbackList,
    ConvertCallback,
    EventCallback,
    as_callback,
)
from natgrad.rl.callbacks.checkpoint import CheckpointCallback
from natgrad.rl.callbacks.evaluation import EvalCallback, StopTrainingOnRewardThreshold
from natgrad.rl.callbacks.interrupt import InterruptCallback
from natgrad.rl.callbacks.metrics import LoggerCallback
from natgrad.rl.callbacks.progress import ConsoleLogCallback, ProgressBarCallback

__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "ConsoleLogCallback",
    "ConvertCallback",
    "EvalCallback",
    "EventCallback",
    "InterruptCallback",
    "LoggerCallback",
    "ProgressBarCallback",
    "StopTrainingOnRewardThreshold",
    "as_callback",
]
