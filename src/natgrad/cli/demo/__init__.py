"""``natgrad demo TOPIC``: the seed article's pictures, computed with natgrad.

Topics:

* ``gaussians`` — two pairs of Gaussians whose means both move from −1 to +1,
  one narrow and one wide, each annotated with its KL and Fisher distance;
* ``steps`` — gradient descent vs natural gradient fitting a Gaussian, their
  paths in ``(μ, log σ)`` space.

``natgrad demo`` alone lists the topics.  The maths lives in :mod:`natgrad.cli.demo.maths`, the drawing in
:mod:`natgrad.cli.demo.plots`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

TOPICS: dict[str, str] = {
    "gaussians": "two pairs of Gaussians, same mean shift, very different KL (the seed's picture)",
    "steps": "gradient descent vs natural gradient fitting a Gaussian, paths in (mu, log sigma)",
}


def _write(out: str, draw: Callable[[str], object]) -> str:
    try:
        path = draw(out)
    except OSError as exc:
        raise ValueError(f"cannot write --out {out!r}: {exc}") from None
    return str(path)


def _run_gaussians(args: argparse.Namespace) -> int:
    from natgrad.cli.demo.maths import gaussian_shift
    from natgrad.cli.demo.plots import check_png_path, plot_gaussians

    bad = [s for s in args.sigmas if not 0 < s < math.inf]
    if bad:
        raise ValueError(f"--sigmas must be finite numbers > 0, got {bad}; e.g. --sigmas 0.3 3")
    check_png_path(args.out, "--out")  # before any work: a bad path writes nothing
    shifts = [gaussian_shift(s) for s in args.sigmas]
    for shift in shifts:
        print(shift.describe())
    path = _write(args.out, lambda out: plot_gaussians(shifts, out))
    print(f"wrote {path}")
    return 0


def _run_steps(args: argparse.Namespace) -> int:
    from natgrad.cli.demo.maths import fit_paths
    from natgrad.cli.demo.plots import check_png_path, plot_fit_paths

    if not (0 < args.lr < math.inf):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr!r}; e.g. 0.2")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}; e.g. 40")
    check_png_path(args.out, "--out")
    start, target = (-3.0, math.log(3.0)), (2.0, math.log(0.5))
    paths = fit_paths(start, target, lr=args.lr, steps=args.steps)
    print(f"fit N(mu, sigma^2) to N(2, 0.5^2) from N(-3, 3^2): {args.steps} steps, lr {args.lr:g}")
    for p in paths:
        mu, log_std = (float(v) for v in p.points[-1])
        print(
            f"  {p.name:<17} mu = {mu:.4f}, sigma = {math.exp(log_std):.4f}, "
            f"KL(p* || p) = {float(p.losses[-1]):.4g}"
        )
    path = _write(args.out, lambda out: plot_fit_paths(paths, target, out))
    print(f"wrote {path}")
    return 0


def _list_topics() -> None:
    print("natgrad demo TOPIC [--out FILE]; topics:")
    for name, text in TOPICS.items():
        print(f"  {name:<10} {text}")


def run(args: argparse.Namespace) -> int:
    """Run the chosen topic, or list the topics when none is given."""
    handler = getattr(args, "topic_func", None)
    if handler is None:
        _list_topics()
        return 0
    return int(handler(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` and its topics to the ``natgrad`` parser."""
    parser = subparsers.add_parser(
        "demo",
        help="draw the seed article's pictures (natgrad demo lists topics)",
        description="Draw the natural-gradient article's pictures, computed with natgrad.",
    )
    parser.set_defaults(func=run, topic_func=None)
    topics = parser.add_subparsers(dest="topic", metavar="TOPIC")

    g = topics.add_parser("gaussians", help=TOPICS["gaussians"], description=TOPICS["gaussians"])
    g.add_argument(
        "--out", default="gaussians.png", help="PNG file to write (default: gaussians.png)"
    )
    g.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=[0.3, 3.0],
        metavar="SIGMA",
        help="the σ of each pair, one panel each (default: 0.3 3)",
    )
    g.set_defaults(topic_func=_run_gaussians)

    s = topics.add_parser("steps", help=TOPICS["steps"], description=TOPICS["steps"])
    s.add_argument("--out", default="steps.png", help="PNG file to write (default: steps.png)")
    s.add_argument("--lr", type=float, default=0.2, help="learning rate of both (default: 0.2)")
    s.add_argument("--steps", type=int, default=40, help="number of steps (default: 40)")
    s.set_defaults(topic_func=_run_steps)
