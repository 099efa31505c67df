"""``natgrad eval RUN_DIR``: deterministic episodes with a run's latest checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run's checkpoint")
    p.add_argument("run_dir", type=Path, help="a directory written by `natgrad train`")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes")
    p.add_argument("--seed", type=int, default=10_000, help="seed of the first episode")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from natgrad.rl.algos.base import OnPolicyAlgorithm
    from natgrad.rl.policies.acting import evaluate
    from natgrad.rl.run import CHECKPOINT

    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: must be >= 1")
    path = args.run_dir / CHECKPOINT
    if not path.exists():
        raise ValueError(f"{args.run_dir} has no {CHECKPOINT}; is it a natgrad run dir?")
    model = OnPolicyAlgorithm.load(path, n_envs=1, vec="sync")
    try:
        env = model.env_source.make_eval_env(args.seed)
        try:
            returns = evaluate(env, model.actor(), args.episodes, args.seed,
                               deterministic=not args.stochastic)  # fmt: skip
        finally:
            env.close()
    finally:
        model.close()
    print(json.dumps({"env_id": model.env_id, "algo": model.algo,
                      "env_steps": model.num_timesteps, "episodes": args.episodes,
                      "mean": float(returns.mean()), "std": float(returns.std()),
                      "returns": returns.tolist()}))  # fmt: skip
    return 0
