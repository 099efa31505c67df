"""Benchmark: epochs and wall time to a target test accuracy, as a K-FAC user measures it.

Two tasks, no download (``bench/data.py``):

* ``mnist1d_cnn``: MNIST-1D (Greydanus 2020; ``mnist1d.make_dataset``
  defaults, 4,000 train / 1,000 test signals of length 40), a 1-D CNN
  (three ``Conv1d`` of 32 channels, kernel 5, the last two with stride 2,
  ReLU, then ``Linear(320, 10)``); target 90 % test accuracy; 30 epochs.
* ``digits_mlp``: sklearn's 8×8 digits, the 64-64-64-10 tanh MLP of
  ``bench/optim.py``; target 95 %; 30 epochs.

Arms (:data:`optim_arms.ARMS`; add an entry there to compare another optimiser):

* ``sgd``: SGD, momentum 0.9;
* ``adam``: Adam, torch's default betas;
* ``kfac``: :class:`natgrad.optim.KFACPreconditioner` in front of SGD with
  momentum 0.9 (kfac-pytorch's usual pairing): true Fisher (one sampled
  target per input), damping 1e-2, factor decay 0.95, factors every 5 steps
  and inverses every 10, KL clip 1e-3 (kfac-pytorch's default);
* ``ngd_ggn``: :class:`natgrad.optim.NaturalGradient` with the exact Fisher
  (GGN) by 10 CG iterations, damping 1e-2.  On MNIST-1D it trains for 10
  epochs only (a step costs ~20 Adam steps there);
* ``ngvi``: natural-gradient VI, :class:`natgrad.vi.VariationalOnlineNewton`
  (IVON's update) with ``bench/vi_deep.py``'s choice on MNIST-1D: ``hess_init`` 0.5,
  ``beta2`` 0.999, weight decay 1e-4, ``ess`` = training rows, one weight
  sample a step; its lr grid in ivon-opt's units; accuracy at the posterior
  mean.

Protocol (the same for every arm): only the learning rate is tuned, over 5
log-spaced values (2 with ``--quick``), on a validation split of the training
rows (``data.validation_split``, tuning seed 100): fewest epochs to the
target, ties broken by the final validation accuracy.  Then 3 seeds (0, 1, 2;
the same initialisation per seed for every arm) train on the full training
split, evaluated on the test split after every epoch.  Minibatches of 128,
one torch thread.  Reported: epochs and training wall time (evaluation
excluded) to the target, final accuracy, and the **time per step** measured
in a separate phase where the arms take turns in blocks of steps on the same
batches (robust to background load; each block spans K-FAC's cycle, so its
periodic factor and inverse updates are included; see :func:`time_steps`).

Usage::

    python bench/optim_targets.py --out bench/results/optim_targets.json \\
        --plot docs/img/optim_targets.png
    python bench/optim_targets.py --quick            # a smoke run, minutes

``--cache FILE`` saves each arm's results as it finishes and reuses them on a
rerun; ``--estimate FILE`` adds ``est_s_to_target`` to an earlier result file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import Split, validation_split  # noqa: E402
from optim_arms import ARMS, TASKS, Arm, Step, Task, make_kfac  # noqa: E402

__all__ = ["ARMS", "TASKS", "Arm", "Step", "Task", "run", "train", "tune"]
TUNE_SEED = 100
BATCH = 128


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    acc = float((model(x).argmax(-1) == y).float().mean())
    return acc if np.isfinite(acc) else 0.0


def train(
    task: Task, arm: Arm, lr: float, seed: int, data: Split, epochs: int, stop: bool = False
) -> dict[str, Any]:
    """Accuracy on ``data``'s test rows and the training time, after every epoch."""
    torch.manual_seed(seed)
    model = task.model()
    step = arm.make(model, lr, n_train=len(data.x_train))
    gen = torch.Generator().manual_seed(seed)
    accs, times, elapsed = [], [], 0.0
    n = len(data.x_train)
    diverged = None
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        t0 = time.perf_counter()
        try:
            for start in range(0, n, BATCH):
                idx = perm[start : start + BATCH]
                step(data.x_train[idx], data.y_train[idx])
        except ValueError as err:  # e.g. NaN gradients reaching CG after a divergence
            diverged = {"epoch": epoch + 1, "error": str(err)[:200]}
        elapsed += time.perf_counter() - t0
        accs.append(0.0 if diverged else accuracy(model, data.x_test, data.y_test))
        times.append(elapsed)
        if diverged or (stop and accs[-1] >= task.target):
            break
    hit = next((i for i, a in enumerate(accs) if a >= task.target), None)
    if not stop:  # full-length curves: a diverged run stays at 0 accuracy
        accs += [0.0] * (epochs - len(accs))
        times += [elapsed] * (epochs - len(times))
    return {
        "acc": accs,
        "time": times,
        "epochs_to_target": None if hit is None else hit + 1,
        "wall_s_to_target": None if hit is None else times[hit],
        "diverged": diverged,
    }


def tune(task: Task, arm: Arm, grid: list[float], data: Split, epochs: int) -> dict[str, Any]:
    """The lr with the fewest epochs to the target on the validation split."""
    val = validation_split(data, seed=TUNE_SEED)
    scores = {}
    for lr in grid:
        r = train(task, arm, lr, TUNE_SEED, val, epochs, stop=True)
        ep = r["epochs_to_target"]
        scores[lr] = (epochs + 1 if ep is None else ep, -r["acc"][-1])
    best = min(grid, key=lambda lr: scores[lr])
    return {"lr": best, "epochs_by_lr": {str(k): v[0] for k, v in scores.items()}}


def time_steps(
    task: Task, lrs: dict[str, float], data: Split, n_steps: int
) -> dict[str, dict[str, float]]:
    """Step times (ms) per arm, the arms taking turns in blocks of steps on the same batches.

    Each round gives every arm the same 11 minibatches, one arm after the other:
    one untimed step (it pays for the caches the previous arm left cold), then
    10 timed steps, which cover K-FAC's cycle (factors every 5 steps, inverses
    every 10) once, starting one position later every round.
    ``amortised_ms`` is the mean over the 10 cycle positions of the median time
    at that position, so the periodic updates count at their share while steps
    stretched by the scheduler on a loaded machine do not; ``amortised_min_ms``
    uses the fastest time instead (as ``timeit`` does).  ``median_ms`` is the
    median single step.  Also times K-FAC with its factors updated at every
    step (``kfac_every_step``).
    """
    steps: dict[str, Step] = {}
    n = len(data.x_train)
    for name, lr in lrs.items():
        torch.manual_seed(0)
        steps[name] = ARMS[name].make(task.model(), lr, n_train=n)
    if "kfac" in lrs:
        torch.manual_seed(0)
        steps["kfac_every_step"] = make_kfac(task.model(), lrs["kfac"], update_factors_every=1)
    cycle = min(10, n_steps)
    rounds = max(1, n_steps // cycle)
    # times[name][p]: the steps at cycle position p (the arm's step count mod cycle)
    times: dict[str, list[list[float]]] = {name: [[] for _ in range(cycle)] for name in steps}
    count = dict.fromkeys(steps, 0)
    gen = torch.Generator().manual_seed(0)
    for r in range(rounds + 1):  # round 0 warms up
        batches = [torch.randint(0, n, (BATCH,), generator=gen) for _ in range(cycle + 1)]
        for name, step in steps.items():
            for k, idx in enumerate(batches):
                t0 = time.perf_counter()
                step(data.x_train[idx], data.y_train[idx])
                if r and k:
                    times[name][count[name] % cycle].append(time.perf_counter() - t0)
                count[name] += 1
    ms = lambda f, t: round(1e3 * statistics.fmean(f(at) for at in t), 4)  # noqa: E731
    return {
        name: {
            "amortised_ms": ms(statistics.median, t),
            "amortised_min_ms": ms(min, t),
            "median_ms": round(1e3 * statistics.median(x for at in t for x in at), 4),
        }
        for name, t in times.items()
    }


def _median(values: list[float | None]) -> float | None:
    """Median counting a miss (None) as +inf; None if the median itself is a miss."""
    m = statistics.median(float("inf") if v is None else float(v) for v in values)
    return None if m == float("inf") else m


def run_task(
    name: str,
    quick: bool,
    seeds: list[int],
    arms: list[str],
    epochs: int | None = None,
    max_train: int | None = None,
    timing_steps: int | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Tune, train and time every arm on one task.

    With ``cache``, each arm's results are saved there as soon as they are done
    and reused by a later run with the same settings (long runs can be resumed).
    """
    done: dict[str, Any] = {}
    if cache is not None and cache.exists():
        done = json.loads(cache.read_text())
    task = TASKS[name]
    data = task.load()
    if max_train is not None:
        data = data._replace(x_train=data.x_train[:max_train], y_train=data.y_train[:max_train])
    epochs = (4 if quick else task.epochs) if epochs is None else epochs
    out: dict[str, Any] = {"title": task.title, "target": task.target, "arms": {}}
    out["train_rows"] = len(data.x_train)
    for arm_name in arms:
        key = f"{name}/{arm_name}/{quick}/{seeds}/{epochs}/{max_train}"
        if key in done:
            out["arms"][arm_name] = done[key]
            continue
        arm = ARMS[arm_name]
        cap = min(epochs, arm.max_epochs.get(name, epochs))
        tuned = tune(task, arm, arm.quick_grid if quick else arm.grid, data, cap)
        runs = [train(task, arm, tuned["lr"], s, data, cap) for s in seeds]
        wall = _median([r["wall_s_to_target"] for r in runs])
        out["arms"][arm_name] = {
            "label": arm.label,
            "lr": tuned["lr"],
            "tuning_epochs_by_lr": tuned["epochs_by_lr"],
            "epochs": cap,
            "epochs_to_target": _median([r["epochs_to_target"] for r in runs]),
            "epochs_to_target_per_seed": [r["epochs_to_target"] for r in runs],
            "wall_s_to_target": None if wall is None else round(wall, 3),
            "final_test_acc": round(float(np.mean([r["acc"][-1] for r in runs])), 4),
            "curve_acc": np.mean([r["acc"] for r in runs], axis=0).round(4).tolist(),
            "curve_time_s": np.mean([r["time"] for r in runs], axis=0).round(3).tolist(),
            "diverged_per_seed": [r["diverged"] for r in runs],
        }
        if cache is not None:
            done[key] = out["arms"][arm_name]
            cache.write_text(json.dumps(done))
    lrs = {a: out["arms"][a]["lr"] for a in arms}
    out["step_ms_interleaved"] = time_steps(task, lrs, data, timing_steps or (20 if quick else 200))
    return compare(out)


def compare(out: dict[str, Any]) -> dict[str, Any]:
    """The K-FAC/Adam step-time ratios (amortised) and the two targets, for one task."""
    timing = out["step_ms_interleaved"]
    if "kfac" in timing and "adam" in timing:
        adam = timing["adam"]["amortised_ms"]
        out["kfac_step_over_adam"] = round(timing["kfac"]["amortised_ms"] / adam, 3)
        every = timing["kfac_every_step"]["amortised_ms"]
        out["kfac_every_step_over_adam"] = round(every / adam, 3)
        inf = float("inf")
        kfac_ep = out["arms"]["kfac"]["epochs_to_target"] or inf
        adam_ep = out["arms"]["adam"]["epochs_to_target"] or inf
        out["targets"] = {
            "kfac_fewer_epochs_than_adam": kfac_ep < adam_ep,
            "kfac_step_le_2x_adam": out["kfac_step_over_adam"] <= 2.0,
        }
    return out


def add_estimates(out: dict[str, Any]) -> dict[str, Any]:
    """Time to the target at the interleaved step time: epochs × steps per epoch × mean step.

    The measured ``wall_s_to_target`` of different arms come from runs made at
    different moments, so background load skews their comparison; this estimate
    uses the step times measured side by side instead.
    """
    for name, res in out["tasks"].items():
        n = res.get("train_rows") or len(TASKS[name].load().x_train)
        steps = -(-n // BATCH)
        for arm_name, arm in res["arms"].items():
            ep = arm["epochs_to_target"]
            ms = res["step_ms_interleaved"][arm_name]["amortised_ms"]
            arm["est_s_to_target"] = None if ep is None else round(ep * steps * ms / 1e3, 3)
    return out


def run(
    quick: bool = False,
    *,
    tasks: list[str] | None = None,
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    plot: str | None = None,
    threads: int = 1,
    epochs: int | None = None,
    max_train: int | None = None,
    timing_steps: int | None = None,
    cache: str | None = None,
) -> dict[str, Any]:
    """Every task and arm; returns all figures (and saves the plot when asked).

    ``epochs``, ``max_train`` (training rows) and ``timing_steps`` shrink the run
    further than ``quick`` (the test suite uses them).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        seeds = ([0] if quick else [0, 1, 2]) if seeds is None else seeds
        arms = list(ARMS) if arms is None else arms
        out: dict[str, Any] = {
            "benchmark": "optim_targets",
            "quick": quick,
            "seeds": seeds,
            "batch": BATCH,
            "threads": threads,
            "tasks": {
                t: run_task(
                    t,
                    quick,
                    seeds,
                    arms,
                    epochs,
                    max_train,
                    timing_steps,
                    None if cache is None else Path(cache),
                )  # fmt: skip
                for t in (tasks or list(TASKS))
            },
        }
        out["total_s"] = round(time.perf_counter() - t0, 1)
        add_estimates(out)
    finally:
        torch.set_num_threads(before)
    if plot:
        save_plot(out, plot)
    return out


def save_plot(out: dict[str, Any], path: str) -> None:
    """Test accuracy against training wall time, one panel per task (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = out["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, res in zip(axes[0], tasks.values()):
        for arm in res["arms"].values():
            ax.plot(arm["curve_time_s"], arm["curve_acc"], marker=".", label=arm["label"])
        ax.axhline(res["target"], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("training wall time (s, one CPU thread)")
        ax.set_ylabel(f"test accuracy (mean over {len(out['seeds'])} seeds)")
        ax.set_ylim(max(0.0, res["target"] - 0.25), 1.0)
        ax.set_title(res["title"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 epochs, 2-point grids")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), help="default: all")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default 0 1 2)")
    parser.add_argument("--plot", metavar="PNG", help="save accuracy-vs-time curves")
    parser.add_argument("--out", metavar="JSON", help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--estimate", metavar="JSON", help="add est_s_to_target to an earlier result file and stop"
    )
    parser.add_argument("--cache", metavar="JSON", help="save/reuse each arm's results here")
    parser.add_argument(
        "--retime", metavar="JSON", help="measure the step times again for a result file's lrs"
    )
    parser.add_argument("--timing-steps", type=int, help="steps per arm in the timing phase")
    args = parser.parse_args(argv)
    if args.retime:
        path = Path(args.retime)
        out = json.loads(path.read_text())
        torch.set_num_threads(args.threads)
        for name, res in out["tasks"].items():
            if args.tasks and name not in args.tasks:
                continue
            lrs = {a: v["lr"] for a, v in res["arms"].items()}
            data = TASKS[name].load()
            n = args.timing_steps or 200
            res["step_ms_interleaved"] = time_steps(TASKS[name], lrs, data, n)
            res["timing_steps"] = n
            compare(res)
        path.write_text(json.dumps(add_estimates(out)) + "\n")
        print(json.dumps({t: r["step_ms_interleaved"] for t, r in out["tasks"].items()}))
        return 0
    if args.estimate:
        path = Path(args.estimate)
        path.write_text(json.dumps(add_estimates(json.loads(path.read_text()))) + "\n")
        return 0
    out = run(
        args.quick,
        tasks=args.tasks,
        arms=args.arms,
        seeds=args.seeds,
        plot=args.plot,
        threads=args.threads,
        timing_steps=args.timing_steps,
        cache=args.cache,
    )
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
