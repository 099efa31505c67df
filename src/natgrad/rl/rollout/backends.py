"""The rollout backend a run's settings name: local (sync or async vector envs) or Ray."""

from __future__ import annotations

from typing import Any

from natgrad.rl.envs.source import EnvSource
from natgrad.rl.rollout.collector import Collector, LocalCollector

__all__ = ["make_collector"]


def make_collector(
    source: EnvSource,
    *,
    n_envs: int,
    seed: int,
    vec: str = "sync",
    workers: int = 0,
    ray_address: str = "",
    step_timeout: float | None = 60.0,
    normalize_obs: bool = False,
    normalize_reward: bool = False,
    clip_obs: float = 10.0,
    gamma: float = 0.99,
) -> Collector:
    """Build the collector for ``vec`` (``"sync"``, ``"async"`` or ``"ray"``).

    Args:
        source: Where the envs come from (:func:`~natgrad.rl.envs.env_source`).
        n_envs, seed: Number of envs and the base seed.
        vec, workers, ray_address: The backend and its workers (0: automatic).
        step_timeout: Seconds an env step may take in a subprocess or on a Ray worker
            before the run ends with an error naming the env and the step.
        normalize_obs, normalize_reward, clip_obs, gamma: Normalisation settings.
    """
    source.check(n_envs, vec)
    norm: dict[str, Any] = dict(
        normalize_obs=normalize_obs, normalize_reward=normalize_reward, clip_obs=clip_obs,
        gamma=gamma,
    )  # fmt: skip
    if vec == "ray":
        if source.factory is None:  # pragma: no cover - source.check refuses objects
            raise ValueError("vec='ray' needs an env id or a picklable factory")
        try:
            from natgrad.rl.rollout.ray import RayCollector
        except ImportError as exc:
            raise ValueError(
                f"vec='ray' needs Ray: install it with `pip install natgrad[ray]` ({exc})"
            ) from None
        return RayCollector(  # type: ignore[return-value]
            source.factory, n_envs, seed, workers=workers or None,
            address=ray_address or None, step_timeout=step_timeout, **norm,
        )  # fmt: skip
    vec_kwargs: dict[str, Any] | None = None
    if vec == "async":
        vec_kwargs = {"timeout": step_timeout}
        if workers:
            vec_kwargs["n_workers"] = workers
    return LocalCollector(source, n_envs, seed, vec=vec, vec_kwargs=vec_kwargs, **norm)
