"""Benchmark: natural gradient (GGN + CG), K-FAC, Adam and SGD on an MLP for the 8×8 digits.

Task: scikit-learn's bundled ``load_digits`` (1,797 images, 64 pixels, 10
classes), standardised with the training split's statistics, split 80/20
(stratified, ``random_state=0``).  Model: 64-64-64-10 MLP with tanh, cross-
entropy loss, minibatches of 128, the same initialisation per seed for all
optimisers.

Tuning protocol (the same budget for every optimiser): one hyperparameter,
the learning rate, is searched over a grid of the same size per optimiser
(``LR_GRID``, 5 log-spaced values; 2 with ``--quick``).  Each candidate trains
on 80 % of the *training* split with a tuning seed (100) and is scored on the
remaining 20 % (validation): fewest epochs to 95 % validation accuracy, ties
broken by final validation accuracy.  The test split is never used for
tuning.  Fixed, untuned settings: Adam's betas; SGD momentum 0.9; damping
1e-2 for both natural-gradient methods; 10 CG iterations for GGN; K-FAC
factor decay 0.95, inverses every 10 steps, one sampled target per input
(the true Fisher), and KL clipping as in ACKTR — step size
``min(lr, sqrt(2δ / xᵀF̂x))`` with δ = 1e-3 (ACKTR's default; ``max_kl`` with
``max_lr=lr``), so K-FAC's tuned "lr" is the cap.  Without the clip, K-FAC
with a plain learning rate occasionally took steps of predicted KL > 1 and
learned slowly at damping 1e-2 (seen on the validation split).

Reported (medians over the evaluation seeds, trained on the full training
split and evaluated on the test split after every epoch): epochs and
training wall time to reach 95 % test accuracy, final test accuracy, and the
median per-step time of each optimiser: ``step_ms`` during its own training
runs, and ``step_ms_interleaved`` from a separate phase of the same run where
all optimisers step round-robin on the same full batches (robust to
background load; the K-FAC/Adam ratio is taken from it).  The step for
Adam/SGD is ``zero_grad + forward + backward + step``; for the natural methods
``opt.step(closure)``, which does all of that and the curvature work.

Usage::

    python bench/optim.py                  # full: 3 seeds, 30 epochs
    python bench/optim.py --quick          # smoke setting (1 seed, small grid)
    python bench/optim.py --plot curves.png

Prints one JSON line with all figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natgrad.optim import NaturalGradient

TARGET = 0.95
TUNE_SEED = 100
OPTIMISERS = ("ngd_ggn", "kfac", "adam", "sgd")
LR_GRID = {
    "ngd_ggn": [0.03, 0.1, 0.3, 1.0, 3.0],
    "kfac": [0.01, 0.03, 0.1, 0.3, 1.0],
    "adam": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "sgd": [0.01, 0.03, 0.1, 0.3, 1.0],
}
QUICK_GRID = {"ngd_ggn": [0.3, 1.0], "kfac": [0.1, 0.3], "adam": [3e-3, 1e-2], "sgd": [0.1, 0.3]}
DAMPING = 1e-2
KFAC_MAX_KL = 1e-3  # ACKTR's KL clip: step size min(lr, sqrt(2δ / xᵀF̂x))


def load_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """Standardised digits, split 80/20 (stratified) with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return {
        "x_train": as_x(x_tr),
        "y_train": as_y(y_tr),
        "x_test": as_x(x_te),
        "y_test": as_y(y_te),
    }


def make_model(seed: int, hidden: int = 64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, 10),
    )


def make_step(name: str, model: nn.Module, lr: float) -> Callable[[Tensor, Tensor], None]:
    """A function doing one optimisation step on a minibatch."""
    if name in ("adam", "sgd"):
        opt: torch.optim.Optimizer = (
            torch.optim.Adam(model.parameters(), lr=lr)
            if name == "adam"
            else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        )

        def first_order(x: Tensor, y: Tensor) -> None:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return first_order
    if name == "kfac":
        ng = NaturalGradient(
            model.parameters(),
            max_kl=KFAC_MAX_KL,
            max_lr=lr,
            damping=DAMPING,
            fisher="kfac",
            model=model,
            likelihood="categorical",
            fisher_options={"factor_decay": 0.95, "inverse_every": 10, "seed": 0},
        )
    else:
        ng = NaturalGradient(
            model.parameters(), lr=lr, damping=DAMPING, cg_iters=10, likelihood="categorical"
        )

    def natural(x: Tensor, y: Tensor) -> None:
        def closure():
            logits = model(x)
            return F.cross_entropy(logits, y), logits

        ng.step(closure)

    return natural


Tensor = torch.Tensor


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(-1) == y).float().mean())


def train(
    name: str,
    lr: float,
    seed: int,
    x_tr: Tensor,
    y_tr: Tensor,
    x_ev: Tensor,
    y_ev: Tensor,
    epochs: int,
    batch: int = 128,
    stop_at_target: bool = False,
) -> dict[str, Any]:
    """Train; accuracy on (x_ev, y_ev) after every epoch, training time, per-step times."""
    model = make_model(seed)
    step = make_step(name, model, lr)
    gen = torch.Generator().manual_seed(seed)
    accs, times, step_times = [], [], []
    elapsed = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for start in range(0, len(x_tr), batch):
            idx = perm[start : start + batch]
            xb, yb = x_tr[idx], y_tr[idx]
            t0 = time.perf_counter()
            step(xb, yb)
            dt = time.perf_counter() - t0
            elapsed += dt
            if len(idx) == batch:
                step_times.append(dt)
        acc = accuracy(model, x_ev, y_ev)
        if not np.isfinite(acc):
            acc = 0.0
        accs.append(acc)
        times.append(elapsed)
        if stop_at_target and acc >= TARGET:
            break
    hit = next((i for i, a in enumerate(accs) if a >= TARGET), None)
    return {
        "acc": accs,
        "epochs_to_target": None if hit is None else hit + 1,
        "wall_s_to_target": None if hit is None else times[hit],
        "step_s": statistics.median(step_times) if step_times else float("nan"),
    }


def tune(name: str, grid: list[float], data: dict[str, Tensor], epochs: int) -> dict[str, Any]:
    """Pick the lr with the fewest epochs to 95 % on a validation split of the training data."""
    n = len(data["x_train"])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(TUNE_SEED))
    cut = int(0.8 * n)
    tr, va = perm[:cut], perm[cut:]
    scores = {}
    for lr in grid:
        r = train(
            name, lr, TUNE_SEED, data["x_train"][tr], data["y_train"][tr],
            data["x_train"][va], data["y_train"][va], epochs, stop_at_target=True,
        )  # fmt: skip
        ep = r["epochs_to_target"]
        scores[lr] = (ep if ep is not None else epochs + 1, -r["acc"][-1])
    best = min(grid, key=lambda lr: scores[lr])
    return {"lr": best, "scores": {str(k): v[0] for k, v in scores.items()}}


def time_steps(
    lrs: dict[str, float], data: dict[str, Tensor], n_steps: int, batch: int = 128
) -> dict[str, float]:
    """Median step time (ms) of every optimiser, steps interleaved round-robin on the same batches.

    Interleaving makes the comparison robust to background load: each optimiser
    sees the same machine state within a few milliseconds.
    """
    steps = {name: make_step(name, make_model(0), lr) for name, lr in lrs.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    gen = torch.Generator().manual_seed(0)
    warmup = 20
    for i in range(n_steps + warmup):
        idx = torch.randint(0, len(data["x_train"]), (batch,), generator=gen)
        xb, yb = data["x_train"][idx], data["y_train"][idx]
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(xb, yb)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: round(1e3 * statistics.median(t), 4) for name, t in times.items()}


def _median(values: list[float | None]) -> float | None:
    """Median counting a miss (None) as +inf; None if the median itself is a miss."""
    keyed = sorted(float("inf") if v is None else float(v) for v in values)
    m = statistics.median(keyed)
    return None if m == float("inf") else m


def run(
    quick: bool = False,
    *,
    seeds: list[int] | None = None,
    epochs: int | None = None,
    plot: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Tune, train every optimiser over the seeds, and return all figures as a dict.

    Runs with ``threads`` torch threads (tiny models are fastest on one) and
    restores the previous setting afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, seeds, epochs, plot, threads)
    finally:
        torch.set_num_threads(before)


def _run(
    quick: bool, seeds: list[int] | None, epochs: int | None, plot: str | None, threads: int
) -> dict[str, Any]:
    seeds = ([0] if quick else [0, 1, 2]) if seeds is None else seeds
    epochs = (6 if quick else 30) if epochs is None else epochs
    grid = QUICK_GRID if quick else LR_GRID
    tune_epochs = 5 if quick else 20
    data = load_data()
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for name in OPTIMISERS:
        tuned = tune(name, grid[name], data, tune_epochs)
        runs = [
            train(
                name,
                tuned["lr"],
                s,
                data["x_train"],
                data["y_train"],
                data["x_test"],
                data["y_test"],
                epochs,
            )  # fmt: skip
            for s in seeds
        ]
        wall = _median([r["wall_s_to_target"] for r in runs])
        results[name] = {
            "lr": tuned["lr"],
            "tuning_epochs_to_95_by_lr": tuned["scores"],
            "epochs_to_95": _median([r["epochs_to_target"] for r in runs]),
            "epochs_to_95_per_seed": [r["epochs_to_target"] for r in runs],
            "wall_s_to_95": None if wall is None else round(wall, 4),
            "final_test_acc": round(float(np.mean([r["acc"][-1] for r in runs])), 4),
            "step_ms": round(1e3 * statistics.median(r["step_s"] for r in runs), 4),
        }
        curves[name] = np.mean([r["acc"] for r in runs], axis=0).tolist()
    timing = time_steps({k: results[k]["lr"] for k in OPTIMISERS}, data, 100 if quick else 500)
    ratio = timing["kfac"] / timing["adam"]
    inf = float("inf")
    adam_ep = results["adam"]["epochs_to_95"] or inf
    natural_ep = min(results[k]["epochs_to_95"] or inf for k in ("kfac", "ngd_ggn"))
    out = {
        "benchmark": "optim_digits_mlp",
        "quick": quick,
        "config": {
            "seeds": seeds,
            "epochs": epochs,
            "batch": 128,
            "hidden": [64, 64],
            "activation": "tanh",
            "target_acc": TARGET,
            "damping": DAMPING,
            "lr_grid": grid,
            "tune_epochs": tune_epochs,
            "threads": threads,
        },  # fmt: skip
        "results": results,
        "step_ms_interleaved": timing,
        "kfac_step_over_adam_step": round(ratio, 3),
        "targets": {
            "natural_fewer_epochs_than_adam": natural_ep < adam_ep,
            "kfac_step_le_2x_adam": ratio <= 2.0,
        },
        "total_s": round(time.perf_counter() - t_start, 1),
        "curves": {k: [round(a, 4) for a in v] for k, v in curves.items()},
    }
    if plot:
        save_plot(curves, plot)
    return out


def save_plot(curves: dict[str, list[float]], path: str) -> None:
    """Test accuracy against epoch, one line per optimiser (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, acc in curves.items():
        ax.plot(range(1, len(acc) + 1), acc, label=name)
    ax.axhline(TARGET, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (mean over seeds)")
    low = min(min(acc) for acc in curves.values())
    ax.set_ylim(max(0.0, min(low, TARGET) - 0.02), 1.0)
    ax.set_title("digits, MLP 64→64→64→10 (tanh), batch 128")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 epochs, 2-point lr grid")
    parser.add_argument("--plot", metavar="FILE", help="save accuracy-vs-epoch curves to FILE")
    parser.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default 0 1 2)")
    parser.add_argument("--epochs", type=int, help="training epochs per evaluation run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    out = run(
        args.quick, seeds=args.seeds, epochs=args.epochs, plot=args.plot, threads=args.threads
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
