"""``natgrad plot RUN_DIR...``: learning curves, mean ± std across seeds."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot learning curves of one or more runs")
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories (seeds are grouped)")
    p.add_argument("--out", type=Path, default=Path("learning_curves.png"), help="PNG to write")
    p.add_argument("--x", default="env_steps", help="progress.csv column on the x axis")
    p.add_argument("--y", default="episode_return", help="progress.csv column on the y axis")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from natgrad.utils.plotting import plot_learning_curves

    if not args.out.parent.exists() if str(args.out.parent) else False:
        raise ValueError(f"--out {args.out}: directory {args.out.parent} does not exist")
    path = plot_learning_curves(args.run_dirs, args.out, x=args.x, y=args.y)
    print(f"wrote {path}")
    return 0
