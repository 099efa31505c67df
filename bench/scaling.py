"""Benchmark: rollout throughput of the Ray backend with 1, 2, 4 and 8 workers against
the local sync and async backends, all measured in one run.

Two envs, 8 envs in total for every backend, collection only (an untrained 64-64 tanh
``ActorCritic`` sampler, so actions are nearly random):

* ``latency``: CartPole-v1 behind a wrapper that sleeps 1 ms per step
  (:class:`~tests.rl.ray_faults.LatencyWrapper`), a stand-in for a remote simulator.
  Sleeping workers need no CPU, so throughput should grow linearly with the workers
  even on a 2-core machine; ``scaling_efficiency[k]`` is ``rate(ray k) / (k * rate(ray 1))``
  (target: >= 0.8 up to 8 workers).
* ``hopper``: Hopper-v5 (MuJoCo), CPU-bound: throughput is capped by the cores.

Every rate is ``n_envs * n_steps / t`` for the median ``t`` of ``repeats`` collects,
after one warm-up collect (which also starts the workers). Ray actors ask for 0.01 CPU
each, so 8 fit on 2 cores.

    python bench/scaling.py            # prints one JSON line (~2 minutes)
    python bench/scaling.py --quick    # small run (tests)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any

import torch

from natgrad.rl.policies import ActorCritic
from natgrad.rl.rollout import LocalCollector
from tests.rl.ray_faults import InjectedEnvFactory

N_ENVS = 8
LATENCY = 0.001


def _rate(collector: Any, n_steps: int, repeats: int) -> float:
    torch.manual_seed(0)
    sampler = ActorCritic(collector.obs_dim, collector.action_space).sampler()
    try:
        collector.collect(sampler, max(1, n_steps // 4))  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            collector.collect(sampler, n_steps)
            times.append(time.perf_counter() - t)
    finally:
        collector.close()
    return collector.n_envs * n_steps / statistics.median(times)


def _measure(env: Any, n_steps: int, repeats: int, workers: tuple[int, ...]) -> dict[str, Any]:
    from natgrad.rl.rollout.ray import RayCollector

    rates = {
        "sync": _rate(LocalCollector(env, N_ENVS, 0, vec="sync"), n_steps, repeats),
        "async": _rate(LocalCollector(env, N_ENVS, 0, vec="async"), n_steps, repeats),
    }
    for k in workers:
        rates[f"ray{k}"] = _rate(RayCollector(env, N_ENVS, 0, workers=k), n_steps, repeats)
    base = rates["ray1"]
    out: dict[str, Any] = {
        "n_steps": n_steps,
        "steps_per_second": {name: round(r, 1) for name, r in rates.items()},
        "scaling_efficiency": {str(k): round(rates[f"ray{k}"] / (k * base), 3) for k in workers},
    }
    out[f"ray{workers[-1]}_over_ray1"] = round(rates[f"ray{workers[-1]}"] / base, 2)
    out[f"ray{workers[-1]}_over_sync"] = round(rates[f"ray{workers[-1]}"] / rates["sync"], 2)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Measure both envs; ``quick`` uses few steps and 1-2 workers (for tests)."""
    import ray

    from natgrad.rl.rollout.ray_worker import cpu_count

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)  # fmt: skip
    workers = (1, 2) if quick else (1, 2, 4, 8)
    repeats = 1 if quick else 3
    try:
        out: dict[str, Any] = {"n_envs": N_ENVS, "cpus": cpu_count(), "latency_s": LATENCY}
        latency_env = InjectedEnvFactory("CartPole-v1", latency=LATENCY)
        out["latency"] = _measure(latency_env, 20 if quick else 400, repeats, workers)
        out["hopper"] = _measure("Hopper-v5", 20 if quick else 2000, repeats, workers)
    finally:
        if started:
            ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, 1-2 Ray workers")
    args = parser.parse_args()
    print(json.dumps(run(args.quick)))


if __name__ == "__main__":
    main()
