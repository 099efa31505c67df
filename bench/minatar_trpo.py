"""MinAtar: natgrad's TRPO (GGN + CG, and K-FAC) against sb3-contrib's TRPO with the same CNN.

Learning (``learn``): each arm trains ``--steps`` env steps on one env with
sb3-contrib's TRPO defaults (n_steps 2048, batch 128, 15 CG steps, damping 0.1, max KL
0.01, 10 critic epochs at lr 1e-3, γ 0.99, λ 0.95), actor and critic each with their own
MinAtar CNN (``SmallCNN``: 3×3 conv of 16 filters, ReLU, Linear 128, ReLU) and a 64×64
tanh head, one torch thread. sb3-contrib gets the very same CNN as its
``features_extractor_class`` (``SB3SmallCNN``), with ``share_features_extractor=False``.
The score is the mean undiscounted return of the last 100 training episodes, logged
after every iteration (the curve), one JSON line per run in
``bench/results/minatar_learning.jsonl``::

    python bench/minatar_trpo.py learn --envs MinAtar/Breakout-v1,MinAtar/SpaceInvaders-v1 \
        --seeds 3 --steps 200000 --jobs 2

Speed (``speed``): in one process, alternately, a few iterations of each library
(steps/s of a whole iteration, 1 env), then a K-FAC policy step against a plain gradient
of the surrogate on the same CNN policy and batch, and the per-step cost of the rollout
sampler; medians over ``--repeats``::

    python bench/minatar_trpo.py speed --repeats 5

Needs the ``bench`` and ``minatar`` extras.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = dict(n_steps=2048, batch_size=128, gamma=0.99, gae_lambda=0.95, cg_max_steps=15,
                cg_damping=0.1, target_kl=0.01, n_critic_updates=10, learning_rate=1e-3)  # fmt: skip
# K-FAC amortised (ACKTR's practice): factor statistics from 1/8 of the batch (256 rows),
# inverses every 10 updates; the plain K-FAC arm takes both from the whole batch every time.
KFAC_AMORTISED = dict(fisher_subsample=0.125, kfac_inverse_every=10)
NATGRAD_ARMS = {"natgrad_ggn": ("ggn", {}), "natgrad_kfac": ("kfac", {}),
                "natgrad_kfac_amortised": ("kfac", KFAC_AMORTISED)}  # fmt: skip
ARMS = ("natgrad_ggn", "natgrad_kfac", "natgrad_kfac_amortised", "sb3")


def _register() -> None:
    from natgrad.rl.envs.packages import load_env_packages

    logging.getLogger().setLevel(logging.ERROR)  # minatar warns about seaborn on import
    load_env_packages("minatar.gym:register_envs")  # once per process


def _sb3_extractor() -> type:
    """An SB3 features extractor made of natgrad's SmallCNN (HWC input, as MinAtar gives)."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from natgrad.rl.envs.layout import image_axes
    from natgrad.rl.policies.extractors import SmallCNN

    class SB3SmallCNN(BaseFeaturesExtractor):
        def __init__(self, observation_space: Any, features_dim: int = 128) -> None:
            super().__init__(observation_space, features_dim)
            axes = image_axes(tuple(observation_space.shape))
            assert axes is not None
            self.chw, self.channel_last = axes
            self.net = SmallCNN(self.chw, features_dim)

        def forward(self, obs: Any) -> Any:
            x = obs.permute(0, 3, 1, 2) if self.channel_last else obs
            return self.net(x)

    return SB3SmallCNN


def make_natgrad(env_id: str, seed: int, fisher: str, **over: Any) -> Any:
    from natgrad.rl import TRPO

    _register()
    names = {"target_kl": "max_kl", "cg_max_steps": "cg_iters", "learning_rate": "critic_lr"}
    settings = {names.get(k, k): v for k, v in {**SETTINGS, **over}.items()}
    return TRPO(env_id, seed=seed, use_preset=False, fisher=fisher, **settings)


def make_sb3(env_id: str, seed: int, **over: Any) -> Any:
    import gymnasium as gym
    from sb3_contrib import TRPO
    from stable_baselines3.common.monitor import Monitor
    from torch import nn

    _register()
    env = Monitor(gym.make(env_id))
    kwargs = dict(features_extractor_class=_sb3_extractor(),
                  features_extractor_kwargs=dict(features_dim=128),
                  share_features_extractor=False, net_arch=dict(pi=[64, 64], vf=[64, 64]),
                  activation_fn=nn.Tanh)  # fmt: skip
    return TRPO("MlpPolicy", env, seed=seed, device="cpu", policy_kwargs=kwargs,
                **{**SETTINGS, **over})  # fmt: skip


def learn_one(arm: str, env_id: str, seed: int, steps: int, n_steps: int | None = None) -> dict:
    """Train one arm; returns the curve (steps, mean return of the last 100 episodes)."""
    import torch

    torch.set_num_threads(1)
    over = {} if n_steps is None else {"n_steps": n_steps}
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    if arm == "sb3":
        from stable_baselines3.common.callbacks import BaseCallback

        class Curve(BaseCallback):
            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                buf = self.model.ep_info_buffer
                if buf:
                    curve.append((self.num_timesteps, float(np.mean([e["r"] for e in buf]))))

        model = make_sb3(env_id, seed, **over)
        model.learn(steps, callback=Curve())
        buf = model.ep_info_buffer
        final = float(np.mean([e["r"] for e in buf])) if buf else float("nan")
        curve.append((model.num_timesteps, final))
    else:
        fisher, extra = NATGRAD_ARMS[arm]
        model = make_natgrad(env_id, seed, fisher, **extra, **over)

        def record(locals_: dict, globals_: dict) -> bool:
            ret = model.metrics.get("episode_return", float("nan"))
            curve.append((model.num_timesteps, float(ret)))
            return True

        model.learn(steps, callback=record)
        final = curve[-1][1]
        model.close()
    res = {"arm": arm, "env": env_id, "seed": seed, "steps": steps, "final_return": final,
           "n_steps": n_steps or SETTINGS["n_steps"],
           "seconds": time.perf_counter() - t0, "curve": curve}  # fmt: skip
    return res


def _star(args: tuple) -> dict:
    return learn_one(*args)


def learn(envs: list[str], seeds: int, steps: int, jobs: int = 2, arms=ARMS,
          out: Path | None = RESULTS / "minatar_learning.jsonl", first_seed: int = 0,
          n_steps: int | None = None) -> list[dict]:  # fmt: skip
    """Every (env, arm, seed) run, ``jobs`` at a time; each result is appended to ``out``
    as it finishes (runs already there are skipped)."""
    done: set[tuple] = set()
    if out is not None and out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r["steps"] == steps:
                done.add((r["arm"], r["env"], r["seed"]))
    todo = [(a, e, s, steps, n_steps) for e in envs for s in range(first_seed, first_seed + seeds)
            for a in arms if (a, e, s) not in done]  # fmt: skip
    results = []

    def keep(res: dict) -> None:
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "curve"}), flush=True)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(res) + "\n")

    if jobs == 1:  # in this process (the tests: no pool under pytest-xdist)
        for args in todo:
            keep(_star(args))
        return results
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, maxtasksperchild=1) as pool:
        for res in pool.imap_unordered(_star, todo):
            keep(res)
    return results


def summarise(path: Path = RESULTS / "minatar_learning.jsonl") -> dict:
    """Mean ± std of the final return per (env, steps, arm)."""
    table: dict[str, dict[str, list[float]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        table.setdefault(f"{r['env']} @ {r['steps']}", {}).setdefault(r["arm"], []).append(
            r["final_return"]
        )
    out = {}
    for key, arms in table.items():
        out[key] = {a: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v),
                        "per_seed": v} for a, v in sorted(arms.items())}  # fmt: skip
    return out


def plot(path: Path = RESULTS / "minatar_learning.jsonl", to: Path | None = None) -> Path:
    """The mean ± std curves of every arm, one panel per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(line) for line in path.read_text().splitlines()]
    envs = sorted({r["env"] for r in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    labels = {"natgrad_ggn": "natgrad TRPO (GGN + CG)", "natgrad_kfac": "natgrad TRPO (K-FAC)",
              "natgrad_kfac_amortised": "natgrad TRPO (K-FAC, amortised)",
              "sb3": "sb3-contrib TRPO"}  # fmt: skip
    for ax, env in zip(axes[0], envs):
        for arm in ARMS:
            curves = [r["curve"] for r in runs if r["env"] == env and r["arm"] == arm]
            if not curves:
                continue
            grid = np.linspace(0, min(c[-1][0] for c in curves), 50)
            ys = np.array([np.interp(grid, [p[0] for p in c], [p[1] for p in c]) for c in curves])
            m, s = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
            ax.plot(grid, m, label=f"{labels[arm]} ({len(curves)} seeds)")
            ax.fill_between(grid, m - s, m + s, alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training return (last 100 episodes)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    to = to or Path(__file__).resolve().parents[1] / "docs" / "img" / "minatar_learning.png"
    fig.savefig(to, dpi=110)
    return to


# --- speed ------------------------------------------------------------------------------
def _iteration_rate(model: Any, n: int, sb3: bool) -> float:
    t = time.perf_counter()
    if sb3:
        model.learn(n, reset_num_timesteps=False)
    else:
        model.learn(n)
    return n / (time.perf_counter() - t)


def speed(env_id: str = "MinAtar/Breakout-v1", repeats: int = 5, n_steps: int = 2048,
          iterations: int = 1) -> dict:  # fmt: skip
    """Steps/s of both libraries (alternating), K-FAC step / gradient, sampler cost."""
    import torch

    from natgrad.rl.algos.step import Surrogate

    torch.set_num_threads(1)
    ours = make_natgrad(env_id, 0, "ggn", n_steps=n_steps)
    kfac = make_natgrad(env_id, 0, "kfac", n_steps=n_steps)
    amort = make_natgrad(env_id, 0, "kfac", n_steps=n_steps, **KFAC_AMORTISED)
    ref = make_sb3(env_id, 0, n_steps=n_steps)
    n = n_steps * iterations
    arms = {"sb3": (ref, True), "natgrad_ggn": (ours, False), "natgrad_kfac": (kfac, False),
            "natgrad_kfac_amortised": (amort, False)}  # fmt: skip
    for m, sb3 in arms.values():
        _iteration_rate(m, n_steps, sb3)  # warm up
    rates: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(repeats):
        for k, (m, sb3) in arms.items():
            rates[k].append(_iteration_rate(m, n, sb3))
    # a K-FAC step (factors from sampled actions, inverses, the natural direction) against
    # a plain gradient of the surrogate (forward and backward), same policy and batch; each
    # K-FAC figure is the mean over 20 consecutive steps (two inverse periods of the
    # amortised arm), so its inverses are counted at their real rate
    batch = kfac._make_batch(kfac.collect_rollout()[0])
    grad_t, sample_t = [], []
    step_t: dict[str, list[float]] = {"natgrad_kfac": [], "natgrad_kfac_amortised": []}
    for _ in range(repeats):
        t = time.perf_counter()
        Surrogate(kfac.policy, batch, normalize_advantage=True)  # forward + gradient
        grad_t.append(time.perf_counter() - t)
        for k, m in (("natgrad_kfac", kfac), ("natgrad_kfac_amortised", amort)):
            cfg = m.config
            t = time.perf_counter()  # K-FAC's statistics, inverses and direction
            for _ in range(20):
                problem = Surrogate(m.policy, batch, normalize_advantage=True, kfac=m.kfac,
                                    kfac_subsample=cfg.fisher_subsample,
                                    generator=m.generator)  # fmt: skip
                m.natural_direction(problem)
            step_t[k].append((time.perf_counter() - t) / 20)
    kfac_t = step_t["natgrad_kfac"]
    from natgrad.rl.policies.actor_critic import TorchSampler, _CopiedActor

    sampler = ours.policy.sampler()
    torch_sampler = TorchSampler(_CopiedActor(ours.policy.actor), "categorical", sampler.out_dim)
    obs = np.asarray(batch.obs[:1].numpy(), dtype=np.float32)
    noise = np.full((1, 1), 0.5, dtype=np.float32)
    torch_t = []
    for _ in range(repeats):
        for s, out in ((sampler, sample_t), (torch_sampler, torch_t)):
            t = time.perf_counter()
            for _ in range(200):
                s.sample(obs, noise)
            out.append((time.perf_counter() - t) / 200)
    env = ours.collector.venv.envs[0]
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(2000):
        if env.step(int(env.action_space.sample()))[2]:
            env.reset()
    raw_env_us = (time.perf_counter() - t) / 2000 * 1e6
    med = {k: statistics.median(v) for k, v in rates.items()}
    res = {
        "env": env_id, "n_steps": n_steps, "repeats": repeats,
        "steps_per_s": med, "speedup_ggn": med["natgrad_ggn"] / med["sb3"],
        "speedup_kfac": med["natgrad_kfac"] / med["sb3"],
        "kfac_step_s": statistics.median(kfac_t), "grad_s": statistics.median(grad_t),
        "kfac_step_over_grad": statistics.median(kfac_t) / statistics.median(grad_t),
        "speedup_kfac_amortised": med["natgrad_kfac_amortised"] / med["sb3"],
        "kfac_amortised_step_s": statistics.median(step_t["natgrad_kfac_amortised"]),
        "kfac_amortised_step_over_grad": statistics.median(step_t["natgrad_kfac_amortised"])
        / statistics.median(grad_t),
        "kfac_amortised_settings": KFAC_AMORTISED,
        "sampler_us_per_step": 1e6 * statistics.median(sample_t),
        "torch_sampler_us_per_step": 1e6 * statistics.median(torch_t),
        "raw_env_us_per_step": raw_env_us,
    }  # fmt: skip
    for m in (ours, kfac, amort):
        m.close()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("learn")
    p.add_argument("--envs", default="MinAtar/Breakout-v1,MinAtar/SpaceInvaders-v1")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--n-steps", type=int, default=None, help="steps per iteration (2048)")
    s = sub.add_parser("speed")
    s.add_argument("--env", default="MinAtar/Breakout-v1")
    s.add_argument("--repeats", type=int, default=5)
    sub.add_parser("summary")
    args = parser.parse_args()
    if args.cmd == "learn":
        learn(args.envs.split(","), args.seeds, args.steps, args.jobs,
              arms=tuple(args.arms.split(",")), first_seed=args.first_seed,
              n_steps=args.n_steps)  # fmt: skip
        print(json.dumps(summarise()), flush=True)
        print(plot())
    elif args.cmd == "speed":
        res = speed(args.env, args.repeats)
        print(json.dumps(res), flush=True)
        with (RESULTS / "minatar_speed.jsonl").open("a") as f:
            f.write(json.dumps(res) + "\n")
    else:
        print(json.dumps(summarise(), indent=1))
        print(plot())


if __name__ == "__main__":
    main()
