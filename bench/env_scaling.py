"""Speed with more envs: natgrad's 8-env throughput against the raw single-env rate, and the
per-step and per-update costs behind a model of how the rate scales with cores.

For each env (Hopper-v5, HalfCheetah-v5, Walker2d-v5 by default) it times, alternately
and ``--repeats`` times: the raw env rate (one env, pre-drawn random actions, no
learning; ``bench/vs_sb3.py``'s ``raw_env_rate``), and natgrad's TRPO with 8 envs
(``vec="sync"``, the critic's fit in a helper process on the second core) on
``bench/vs_sb3.py``'s shared settings (64×64 tanh, ``n_steps`` 2048 per env, so 16,384
transitions an iteration, 15 CG steps, 10 critic epochs of 128, no normalisation).
``fraction_of_raw`` is natgrad's end-to-end steps/s over the raw rate (medians).

The cost-model constants come from the same runs: the env step (1 / raw rate), the
collection cost per transition at 8 envs (``rollout_seconds`` / transitions, env step
included), the policy step per iteration (``update_seconds`` with the helper: the
natural step, while the critic's fit runs beside it) and the critic's fit (the extra
``update_seconds`` of a run without the helper).  ``docs/scaling.md`` turns them into
rates for 2, 8, 32 and 128 cores (:func:`model`).

    python bench/env_scaling.py                  # ~10 min on a quiet 2-core machine
    python bench/env_scaling.py --envs Hopper-v5 --repeats 1 --iterations 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_sb3 import SHARED, raw_env_rate  # noqa: E402

ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


def natgrad_rate(env_id: str, n_envs: int, n_steps: int, iterations: int, seed: int,
                 helper: bool = True) -> dict[str, float]:  # fmt: skip
    """End-to-end steps/s of TRPO (construction excluded), and per-iteration medians."""
    from natgrad.rl import TRPO

    agent = TRPO(env_id, n_envs=n_envs, n_steps=n_steps, vec="sync", seed=seed, threads=1,
                 critic_worker=helper, use_preset=False, **SHARED)  # fmt: skip
    metrics: list[dict[str, float]] = []
    t = time.perf_counter()
    agent.learn(n_envs * n_steps * iterations,
                callback=lambda loc, _: metrics.append(loc["metrics"]))  # fmt: skip
    wall = time.perf_counter() - t
    agent.close()
    return {
        "steps_per_s": agent.num_timesteps / wall,
        "rollout_s": statistics.median(m["rollout_seconds"] for m in metrics),
        "update_s": statistics.median(m["update_seconds"] for m in metrics),
    }


def measure(env_id: str, repeats: int = 2, iterations: int = 4, n_envs: int = 8,
            n_steps: int = 2048, raw_steps: int = 20_000) -> dict[str, Any]:  # fmt: skip
    """Alternate raw rate, natgrad with the helper and without it; medians of each."""
    torch.set_num_threads(1)
    raw, ours, serial = [], [], []
    for r in range(repeats):
        raw.append(raw_env_rate(env_id, steps=raw_steps, repeats=3))
        ours.append(natgrad_rate(env_id, n_envs, n_steps, iterations, r))
        serial.append(natgrad_rate(env_id, n_envs, n_steps, max(2, iterations // 2), r, False))
    raw.append(raw_env_rate(env_id, steps=raw_steps, repeats=3))
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    batch = n_envs * n_steps
    rate = med(ours, "steps_per_s")
    raw_rate = statistics.median(raw)
    res = {
        "env": env_id, "n_envs": n_envs, "batch": batch, "repeats": repeats,
        "raw_steps_per_s": raw_rate, "raw_spread": [min(raw), max(raw)],
        "natgrad_steps_per_s": rate, "fraction_of_raw": rate / raw_rate,
        "t_env_us": 1e6 / raw_rate,
        "t_collect_us": 1e6 * med(ours, "rollout_s") / batch,
        "policy_step_s": med(ours, "update_s"),
        "critic_fit_s": max(0.0, med(serial, "update_s") - med(ours, "update_s")),
    }  # fmt: skip
    return res


def model(c: dict[str, float], cores: int, backend: str, batch: int,
          n_steps: int = 2048, rtt_us: float = 140.0, ray_iter_s: float = 0.02,
          bytes_per_step: float = 240.0, bandwidth: float = 1e9) -> float:  # fmt: skip
    """Steps/s that the measured costs ``c`` predict for ``cores`` cores.

    One core runs the learner (the policy step, serial: TRPO is on-policy), one the
    critic's fit (hidden behind the next collection while it is shorter); the rest step
    envs.  ``local``: one machine, ``cores − 2`` subprocess workers (at least 1), each
    vector step of a worker costing one pipe round trip ``rtt_us``; ``ray``: workers
    spread over nodes collect their share independently, paying ``ray_iter_s`` a
    round and the batch's bytes over the network.  The policy step scales with the batch
    (it was measured at ``c["batch"]``).
    """
    workers = max(1, cores - 2)
    per_step = c["t_collect_us"] * 1e-6
    policy = c["policy_step_s"] * batch / c["batch"]
    collect = batch * per_step / workers
    if backend == "local":
        collect += n_steps * rtt_us * 1e-6 if workers > 1 else 0.0
    elif backend == "ray":
        collect += ray_iter_s + batch * bytes_per_step / bandwidth
    else:
        raise ValueError(f"backend={backend!r}; use 'local' or 'ray'")
    critic = c["critic_fit_s"] * batch / c["batch"]
    return batch / (max(collect, critic - policy) + policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here")
    args = parser.parse_args()
    for env_id in args.envs.split(","):
        res = measure(env_id, args.repeats, args.iterations)
        res["model"] = {
            backend: {str(k): round(model(res, k, backend, 2048 * max(8, k - 2)))
                      for k in (2, 8, 32, 128)}
            for backend in ("local", "ray")
        }  # fmt: skip
        line = json.dumps(res)
        print(line, flush=True)
        if args.out is not None:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
