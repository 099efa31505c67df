"""Rollouts: collectors turn a policy's sampler and vector envs into batches.

* :mod:`~natgrad.rl.rollout.collector`: the :class:`Collector` protocol and
  :class:`LocalCollector` (sync or async vector envs);
* :mod:`~natgrad.rl.rollout.ray`: :class:`~natgrad.rl.rollout.ray.RayCollector`, the
  same batches from Ray actors (imported on demand: Ray is an optional extra);
* :mod:`~natgrad.rl.rollout.batch`: :class:`RolloutBatch` and helpers over batches;
* :mod:`~natgrad.rl.rollout.gae`: generalised advantage estimation;
* :mod:`~natgrad.rl.rollout.normalize`: running observation and reward normalisation.

Data flows one way: env → collector → :class:`RolloutBatch` → the algorithm.
"""

from natgrad.rl.rollout.backends import make_collector
from natgrad.rl.rollout.batch import Episode, RolloutBatch, concat_batches, update_stats
from natgrad.rl.rollout.collector import Collector, LocalCollector
from natgrad.rl.rollout.gae import compute_next_values, gae
from natgrad.rl.rollout.normalize import ObsNormalizer, RewardScaler, RunningMeanStd

__all__ = [
    "Collector",
    "Episode",
    "LocalCollector",
    "ObsNormalizer",
    "RewardScaler",
    "RolloutBatch",
    "RunningMeanStd",
    "compute_next_values",
    "concat_batches",
    "gae",
    "make_collector",
    "update_stats",
]
