"""Reference learning runs of sb3-contrib's TRPO with rl-baselines3-zoo's settings, on this machine.

The zoo's ``mujoco-defaults`` for TRPO (2 envs, n_steps 1024, batch 128, 25 CG steps,
damping 0.1, 20 critic epochs, lr 1e-3, VecNormalize on observations and rewards), or
for ``CartPole-v1`` its tuned CartPole entry;
deterministic evaluation of 10 episodes with the normalisation frozen, one JSON line per
seed and a summary line; the counterpart of ``bench/learning.py``.

    python bench/sb3_learning.py --env Hopper-v5 --seeds 3 --steps 1000000
    python bench/sb3_learning.py --env Hopper-v5 --set gamma=0.995   # natgrad's Hopper preset
    python bench/sb3_learning.py --env CartPole-v1 --steps 100000 --set batch_size=128 --set target_kl=0.01
    python bench/sb3_learning.py --env Hopper-v5 --first-seed 3 --seeds 1 --time-to 3372

``--time-to LEVEL`` records the wall seconds (from the start of the seed's process
work, imports included) and env steps at which the training return (the mean of the
last 100 episodes, sb3's ``ep_rew_mean``, read at the end of each rollout) first
reaches LEVEL, and the learning curve, in the JSON line.

``--set`` overrides a TRPO constructor argument; with observation/reward normalisation the
reward scaling discounts with the run's ``gamma`` (as natgrad's does).

Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np

ZOO_MUJOCO = dict(n_steps=1024, batch_size=128, gamma=0.99, gae_lambda=0.95,
                  sub_sampling_factor=1, cg_max_steps=25, cg_damping=0.1,
                  n_critic_updates=20, learning_rate=1e-3)  # fmt: skip
# rl-baselines3-zoo hyperparams/trpo.yml, CartPole-v1 (tuned); no normalisation.
ZOO_CARTPOLE = dict(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99,
                    learning_rate=1e-3, n_critic_updates=20)  # fmt: skip


def run_seed(env_id: str, seed: int, steps: int, overrides: dict | None = None,
             time_to: float | None = None) -> dict:  # fmt: skip
    t0 = time.perf_counter()
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    normalize = env_id != "CartPole-v1"
    settings = {**(ZOO_MUJOCO if normalize else ZOO_CARTPOLE), **(overrides or {})}
    env = make_vec_env(env_id, n_envs=2, seed=seed)
    env = VecNormalize(env, gamma=settings.get("gamma", 0.99)) if normalize else env
    model = TRPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **settings)
    curve: list[tuple[int, float, float]] = []  # (env steps, wall s, training return)

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.ep_info_buffer
            if buf:
                ret = float(np.mean([ep["r"] for ep in buf]))
                curve.append((self.model.num_timesteps, time.perf_counter() - t0, ret))

    model.learn(steps, callback=Curve())
    wall = time.perf_counter() - t0
    eval_env = make_vec_env(env_id, n_envs=1, seed=10_000 + seed)
    if normalize:
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        eval_env.obs_rms = env.obs_rms
    returns = []
    obs = eval_env.reset()
    ret = 0.0
    while len(returns) < 10:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = eval_env.step(action)
        ret += float(eval_env.get_original_reward()[0] if normalize else reward[0])
        if done[0]:
            returns.append(ret)
            ret = 0.0
    res = {"env": env_id, "seed": seed, "steps": steps, "overrides": overrides or {},
           "eval_mean": float(np.mean(returns)), "wall_s": round(wall, 2)}  # fmt: skip
    if time_to is not None:
        hit = next((c for c in curve if c[2] >= time_to), None)
        res["time_to"] = {"level": time_to, "reached": hit is not None,
                          "env_steps": hit[0] if hit else None,
                          "wall_s": round(hit[1], 2) if hit else None}  # fmt: skip
        keep = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), 200)).astype(int))
        res["curve"] = {"env_steps": [curve[i][0] for i in keep],
                        "wall_s": [round(curve[i][1], 2) for i in keep],
                        "episode_return": [round(curve[i][2], 2) for i in keep]}  # fmt: skip
    print(json.dumps(res), flush=True)
    return res


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--label", default="", help="ignored: names the run in the process list")
    parser.add_argument("--time-to", type=float, default=None, metavar="LEVEL",
                        help="record when the training return first reaches LEVEL")  # fmt: skip
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="ARG=VALUE")
    args = parser.parse_args()
    overrides = {k: _number(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(args.env, s, args.steps, overrides, args.time_to) for s in seeds]
    if args.jobs == 1:
        results = [run_seed(*job) for job in jobs]
    else:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.starmap(run_seed, jobs)
    means = [r["eval_mean"] for r in results]
    print(json.dumps({"env": args.env, "seeds": args.seeds, "eval_per_seed": means,
                      "eval_mean": float(np.mean(means)), "eval_std": float(np.std(means))}))  # fmt: skip


if __name__ == "__main__":
    main()
