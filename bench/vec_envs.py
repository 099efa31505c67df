"""Benchmark: natgrad's hand-written vector envs and normaliser against gymnasium's.

natgrad keeps its own ``SyncVecEnv``/``AsyncVecEnv`` and ``ObsNormalizer`` only if they
earn it. This measures, in one process and alternately, the rollout rate (steps/s, all
envs together) of natgrad's collector over

* ``natgrad``: its own ``SyncVecEnv``;
* ``gymnasium``: ``gymnasium.vector.SyncVectorEnv`` (SAME_STEP autoreset) through
  natgrad's ``GymVectorAdapter``, the rest of the loop unchanged;
* with 8 envs also ``natgrad_async`` (``AsyncVecEnv``, one worker per core) and
  ``gymnasium_async`` (``AsyncVectorEnv``, one process per env);

and the per-step cost of observation normalisation: natgrad's ``ObsNormalizer``
(statistics frozen within a rollout, updated once per batch: what makes a batch
independent of how envs are grouped on workers) against gymnasium's
``NormalizeObservation`` wrapper (updated at every step, in every env).

    python bench/vec_envs.py                       # CartPole-v1 and Hopper-v5, 1 and 8 envs
    python bench/vec_envs.py --envs CartPole-v1 --n-envs 8 --repeats 5

Prints one JSON line per setting (medians over ``--repeats``) and a summary.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from natgrad.rl.envs import EnvSource
from natgrad.rl.policies import ActorCritic
from natgrad.rl.rollout import LocalCollector, ObsNormalizer


def _make(env_id: str) -> gym.Env:
    return gym.make(env_id)


def _collector(env_id: str, n_envs: int, backend: str) -> LocalCollector:
    if backend == "natgrad":
        return LocalCollector(env_id, n_envs, seed=0)
    if backend == "natgrad_async":
        return LocalCollector(env_id, n_envs, seed=0, vec="async")
    mode = gym.vector.AutoresetMode.SAME_STEP
    fns = [functools.partial(_make, env_id) for _ in range(n_envs)]
    if backend == "gymnasium_async":
        venv: gym.vector.VectorEnv = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
    else:
        venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    return LocalCollector(EnvSource(env_id=env_id, vector_env=venv), n_envs, seed=0)


def rollout_rate(env_id: str, n_envs: int, backend: str, steps: int) -> float:
    """Steps/s of natgrad's collector (a 64×64 MLP policy) over ``backend``'s vector env."""
    col = _collector(env_id, n_envs, backend)
    torch.manual_seed(0)
    sampler = ActorCritic(col.obs_dim, col.action_space).sampler()
    col.collect(sampler, 64)  # warm-up
    t = time.perf_counter()
    col.collect(sampler, steps)
    rate = steps * n_envs / (time.perf_counter() - t)
    col.close()
    return rate


def normaliser_cost(env_id: str, steps: int) -> dict[str, float]:
    """Microseconds per step of one env with each normaliser (and with none)."""
    out = {}
    for name in ("none", "natgrad", "gymnasium"):
        env = gym.make(env_id)
        if name == "gymnasium":
            env = gym.wrappers.NormalizeObservation(env)
        norm = ObsNormalizer(env.observation_space.shape) if name == "natgrad" else None
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(1000)]
        env.reset(seed=0)
        buf = np.empty(env.observation_space.shape, np.float32)
        t = time.perf_counter()
        for i in range(steps):
            obs, _, term, trunc, _ = env.step(actions[i % 1000])
            if norm is not None:
                norm.normalize(obs, out=buf)
            if term or trunc:
                env.reset()
        out[name] = 1e6 * (time.perf_counter() - t) / steps
        env.close()
    return {"us_per_step": out, "natgrad_overhead_us": out["natgrad"] - out["none"],
            "gymnasium_overhead_us": out["gymnasium"] - out["none"]}  # fmt: skip


def compare(env_id: str, n_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"natgrad": [], "gymnasium": []}
    if n_envs > 1:
        rates.update(natgrad_async=[], gymnasium_async=[])
    for _ in range(repeats):
        for backend in rates:
            rates[backend].append(rollout_rate(env_id, n_envs, backend, steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "env": env_id,
        "n_envs": n_envs,
        "steps_per_env": steps,
        "repeats": repeats,
        "rollout_steps_per_s": med,
        "natgrad_over_gymnasium": med["natgrad"] / med["gymnasium"],
        **(
            {"async_natgrad_over_gymnasium": med["natgrad_async"] / med["gymnasium_async"]}
            if n_envs > 1
            else {}
        ),
    }


def run(quick: bool = False, envs: list[str] | None = None, n_envs: list[int] | None = None,
        repeats: int = 3) -> dict[str, Any]:  # fmt: skip
    torch.set_num_threads(1)
    if quick:
        envs, n_envs, repeats = ["CartPole-v1"], [2], 1
    envs = envs or ["CartPole-v1", "Hopper-v5"]
    results = []
    for env_id in envs:
        steps = 256 if quick else (2048 if "Hopper" in env_id else 8192)
        for n in n_envs or [1, 8]:
            res = compare(env_id, n, steps // n if n > 1 else steps, repeats)
            print(json.dumps(res), flush=True)
            results.append(res)
    norm = {e: normaliser_cost(e, 500 if quick else 20_000) for e in envs}
    print(json.dumps({"normalisation": norm}), flush=True)
    return {"rollouts": results, "normalisation": norm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="CartPole-v1,Hopper-v5")
    parser.add_argument("--n-envs", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = run(args.quick, args.envs.split(","), [int(n) for n in args.n_envs.split(",")],
              args.repeats)  # fmt: skip
    summary = {f"{r['env']} x{r['n_envs']}": round(r["natgrad_over_gymnasium"], 2)
               for r in out["rollouts"]}  # fmt: skip
    print(json.dumps({"summary_natgrad_over_gymnasium": summary}))


if __name__ == "__main__":
    main()
