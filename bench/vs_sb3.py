"""Benchmark: natgrad's TRPO against sb3-contrib's TRPO, alternately, in one session.

Two fair pairings, each at equal cores:

* **one core**: natgrad in one process (no critic helper), one torch thread, against
  sb3-contrib with one torch thread;
* **two cores**: natgrad with its critic helper process (the critic's fit on the second
  core while the policy step runs), against sb3-contrib with two torch threads.

Both run the same settings: 64×64 tanh actor and critic, ``n_steps`` 2048 (sb3's
meaning: steps per env per iteration, so 8 envs collect 16,384 transitions per
iteration; ``--fixed-batch`` keeps 2,048 transitions per iteration instead, with
``n_steps = 2048 / n_envs``), 15 CG steps, damping 0.1, max KL 0.01, 10 critic
epochs of minibatch 128 with Adam 1e-3, GAE(0.99, 0.95), no normalisation, one
torch thread.  For each env and env count it reports
end-to-end steps/s (model construction excluded, the first iteration
included), the update seconds per iteration (sb3's ``train()``, natgrad's
``update_seconds``), their ratios, the deterministic evaluation return after
the short run, and the raw env step rate (random actions, no learning).

    python bench/vs_sb3.py                          # CartPole, Pendulum, Hopper × 1 and 8 envs
    python bench/vs_sb3.py --envs Hopper-v5 --n-envs 1 --iterations 5 --repeats 3
    python bench/vs_sb3.py --n-envs 8 --fixed-batch   # 2,048 transitions per iteration

Needs the ``bench`` extra (stable-baselines3, sb3-contrib).  Prints one JSON
line per setting and a summary line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from natgrad.rl import TRPO

SHARED = dict(batch_size=128, n_critic_updates=10, cg_iters=15, cg_damping=0.1, max_kl=0.01,
              gamma=0.99, gae_lambda=0.95, critic_lr=1e-3)  # fmt: skip
BATCH = 2048


def raw_env_rate(env_id: str, steps: int = 20_000, seed: int = 0, repeats: int = 5) -> float:
    """Steps/s of one env stepped with pre-drawn random actions (the physical limit):
    the median of ``repeats`` timings of ``steps`` steps."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(1000)]
    env.reset(seed=seed)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(steps):
            _, _, term, trunc, _ = env.step(actions[i % 1000])
            if term or trunc:
                env.reset()
        rates.append(steps / (time.perf_counter() - t))
    env.close()
    return statistics.median(rates)


def run_natgrad(env_id: str, n_envs: int, n_steps: int, iterations: int, vec: str,
                seed: int, helper: bool = False) -> dict[str, Any]:  # fmt: skip
    """``helper``: the critic's fit in a helper process (a second core)."""
    agent = TRPO(env_id, n_envs=n_envs, n_steps=n_steps, vec=vec, seed=seed, threads=1,
                 critic_worker=helper, use_preset=False, **SHARED)  # fmt: skip
    metrics: list[dict[str, float]] = []
    t = time.perf_counter()
    agent.learn(
        n_steps * n_envs * iterations, callback=lambda loc, _: metrics.append(loc["metrics"])
    )
    wall = time.perf_counter() - t
    ev = agent.evaluate(5)
    agent.close()
    return {
        "steps_per_s": agent.num_timesteps / wall,
        "update_s": statistics.median(m["update_seconds"] for m in metrics),
        "rollout_s": statistics.median(m["rollout_seconds"] for m in metrics),
        "eval_return": float(np.mean(ev)),
    }


def run_sb3(env_id: str, n_envs: int, n_steps: int, iterations: int, seed: int,
            threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """sb3-contrib's TRPO with ``threads`` torch threads."""
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    model = SB3TRPO("MlpPolicy", env, n_steps=n_steps, batch_size=128,
                    n_critic_updates=10, cg_max_steps=15, cg_damping=0.1, target_kl=0.01,
                    gamma=0.99, gae_lambda=0.95, learning_rate=1e-3, seed=seed, device="cpu",
                    verbose=0)  # fmt: skip
    train = model.train
    updates: list[float] = []

    def timed_train() -> None:
        t0 = time.perf_counter()
        train()
        updates.append(time.perf_counter() - t0)

    model.train = timed_train  # type: ignore[method-assign]
    torch.set_num_threads(threads)
    try:
        t = time.perf_counter()
        model.learn(n_steps * n_envs * iterations)
        wall = time.perf_counter() - t
    finally:
        torch.set_num_threads(1)
    eval_env = gym.make(env_id)
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
    eval_env.close()
    env.close()
    return {
        "steps_per_s": model.num_timesteps / wall,
        "update_s": statistics.median(updates),
        "eval_return": float(mean),
    }


def compare(env_id: str, n_envs: int, iterations: int, repeats: int,
            n_steps: int = BATCH) -> dict[str, Any]:  # fmt: skip
    """Alternate the four arms ``repeats`` times; medians of each figure.

    ``sb3_1`` / ``natgrad_1core``: one core each; ``sb3_2`` (two torch threads) /
    ``natgrad_2core`` (critic helper process): two cores each.
    """
    arms: dict[str, Any] = {
        "sb3_1": lambda r: run_sb3(env_id, n_envs, n_steps, iterations, r, threads=1),
        "natgrad_1core": lambda r: run_natgrad(env_id, n_envs, n_steps, iterations, "sync", r),
        "sb3_2": lambda r: run_sb3(env_id, n_envs, n_steps, iterations, r, threads=2),
        "natgrad_2core": lambda r: run_natgrad(
            env_id, n_envs, n_steps, iterations, "sync", r, helper=True
        ),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in arms}
    for r in range(repeats):
        for name, arm in arms.items():
            runs[name].append(arm(r))
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in runs.items()}
    raw = raw_env_rate(env_id)
    out: dict[str, Any] = {
        "env": env_id, "n_envs": n_envs, "n_steps": n_steps, "batch": n_steps * n_envs,
        "iterations": iterations, "repeats": repeats, "raw_env_steps_per_s": raw, **med,
    }  # fmt: skip
    for cores, (ours, ref) in {"1core": ("natgrad_1core", "sb3_1"),
                               "2core": ("natgrad_2core", "sb3_2")}.items():  # fmt: skip
        out[f"speedup_{cores}"] = med[ours]["steps_per_s"] / med[ref]["steps_per_s"]
        out[f"update_time_ratio_{cores}"] = med[ours]["update_s"] / med[ref]["update_s"]
        out[f"fraction_of_raw_rate_{cores}"] = med[ours]["steps_per_s"] / raw
    return out


def run(quick: bool = False, envs: list[str] | None = None, n_envs: list[int] | None = None,
        iterations: int | None = None, repeats: int | None = None,
        fixed_batch: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """All comparisons; ``quick`` is a tiny CartPole-only smoke run (for tests)."""
    torch.set_num_threads(1)
    if quick:
        envs, n_envs, iterations, repeats = ["CartPole-v1"], [1], 1, 1
    envs = envs or ["CartPole-v1", "Pendulum-v1", "Hopper-v5"]
    results = []
    for env_id in envs:
        for n in n_envs or [1, 8]:
            n_steps = BATCH // n if fixed_batch else BATCH
            default_its = (5 if "Hopper" in env_id else 10) if n_steps * n <= BATCH else 6
            res = compare(env_id, n, iterations or default_its, repeats or 2, n_steps)
            print(json.dumps(res), flush=True)
            results.append(res)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="CartPole-v1,Pendulum-v1,Hopper-v5")
    parser.add_argument("--n-envs", default="1,8")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--fixed-batch",
        action="store_true",
        help="2,048 transitions per iteration whatever n_envs (n_steps = 2048/n_envs)",
    )
    args = parser.parse_args()
    results = run(args.quick, args.envs.split(","), [int(n) for n in args.n_envs.split(",")],
                  args.iterations, args.repeats, args.fixed_batch)  # fmt: skip
    summary = [
        {k: (round(r[k], 3) if isinstance(r[k], float) else r[k])
         for k in ("env", "n_envs", "batch", "speedup_1core", "update_time_ratio_1core",
                   "fraction_of_raw_rate_1core", "speedup_2core", "update_time_ratio_2core",
                   "fraction_of_raw_rate_2core")}
        for r in results
    ]  # fmt: skip
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
