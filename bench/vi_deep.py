"""Benchmark: natural-gradient VI for deep nets against ivon-opt and Adam.

Two tasks, neither downloads anything (``bench/data.py``):

* ``digits``: sklearn's 8×8 digits, MLP 64-64-64-10 (tanh), as in ``bench/optim.py``;
* ``mnist1d``: MNIST-1D from ``mnist1d.make_dataset`` defaults, a 1-D CNN
  (three conv layers of 25 channels, kernel 5/3/3, stride 2, ReLU; linear head),
  the network of the MNIST-1D paper.

Methods, all with minibatches of 128, cosine learning-rate decay to 0 and the same
number of epochs:

* ``adam``: ``torch.optim.Adam``; predicts with its weights;
* ``ivon``: ``ivon.IVON`` (the ``ivon-opt`` package), one weight sample per step;
* ``natgrad``: :class:`natgrad.vi.VariationalOnlineNewton`, one sample per step;
* ``natgrad_anti`` (optional, ``--methods``): the same with an antithetic pair
  (two gradients per step).

The variational methods predict with the posterior predictive, the average of the
softmax over ``TEST_SAMPLES`` weight samples. Both use ``ess`` = training-set size
and the same grid; ivon-opt's ``lr`` (``rescale_lr=True``) is natgrad's
``lr / (hess_init + weight_decay)``, so the grid is written in ivon-opt's units and
translated.

Tuning (never on the test split): every grid point trains with seed 100 on 80 % of
the training split and is scored by the negative log-likelihood on the other 20 %;
the best point is then trained on the whole training split with seeds 0, 1, 2 and
evaluated on the test split: accuracy, NLL and ECE (15 bins).

    python bench/vi_deep.py                      # both tasks, 3 seeds, writes bench/results/
    python bench/vi_deep.py --quick              # tiny smoke setting
    python bench/vi_deep.py --tasks mnist1d --methods natgrad ivon
    python bench/vi_deep.py --table bench/results/vi_deep.jsonl   # the docs/vi.md table

Each run appends one JSON line to ``--out`` (default ``bench/results/vi_deep.jsonl``);
runs already in that file are reused (so a grid can be extended), and the summary
(mean and standard deviation over seeds) is printed as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import Split, digits, mnist1d, validation_split  # noqa: E402
from nets import CNN1D, digits_mlp  # noqa: E402

from natgrad.vi import (  # noqa: E402
    VariationalOnlineNewton,
    classification_metrics,
    posterior_predictive,
)

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 128
TEST_SAMPLES = 32
TUNE_SEED = 100
SEEDS = (0, 1, 2)
EPOCHS = {"digits": 60, "mnist1d": 60}
METHODS = ("adam", "ivon", "natgrad")
WEIGHT_DECAY = 1e-4  # IVON's δ (prior precision per example); Adam gets none

GRIDS: dict[str, dict[str, list[Any]]] = {
    "adam": {"lr": [1e-3, 3e-3, 1e-2, 3e-2]},
    # ivon-opt units (rescaled lr); both variational methods use the same points
    "ivon": {"lr": [0.2, 0.5, 1.0, 2.0], "hess_init": [0.1, 0.5], "beta2": [0.999, 0.99999]},
}
GRIDS["natgrad"] = GRIDS["ivon"]
GRIDS["natgrad_anti"] = GRIDS["ivon"]
QUICK_GRIDS: dict[str, dict[str, list[Any]]] = {
    "adam": {"lr": [3e-3]},
    "ivon": {"lr": [0.2], "hess_init": [0.5], "beta2": [0.999]},
}
for _m in ("natgrad", "natgrad_anti"):
    QUICK_GRIDS[_m] = QUICK_GRIDS["ivon"]


TASKS: dict[str, tuple[Callable[[], Split], Callable[[], nn.Module]]] = {
    "digits": (digits, digits_mlp),
    "mnist1d": (mnist1d, CNN1D),
}


def _ivon_available() -> str | None:
    try:
        import ivon  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        return f"ivon-opt is not installed ({exc}); pip install -c constraints.txt ivon-opt"
    return None


class _Trainer:
    """One method on one model: ``step(x, y)`` and ``predict(x) -> probs``."""

    def __init__(self, method: str, model: nn.Module, hp: dict[str, Any], n_train: int) -> None:
        self.method, self.model = method, model
        params = list(model.parameters())
        if method == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=hp["lr"])
        elif method == "ivon":
            import ivon

            self.opt = ivon.IVON(
                params, lr=hp["lr"], ess=n_train, hess_init=hp["hess_init"],
                beta2=hp["beta2"], weight_decay=WEIGHT_DECAY, mc_samples=1,
            )  # fmt: skip
        elif method in ("natgrad", "natgrad_anti"):
            anti = method == "natgrad_anti"
            self.opt = VariationalOnlineNewton(
                params, lr=hp["lr"] * (hp["hess_init"] + WEIGHT_DECAY), ess=n_train,
                betas=(0.9, hp["beta2"]), weight_decay=WEIGHT_DECAY,
                hess_init=hp["hess_init"], mc_samples=2 if anti else 1, antithetic=anti,
            )  # fmt: skip
        else:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(GRIDS)}")

    def step(self, x: Tensor, y: Tensor) -> float:
        loss_fn = nn.functional.cross_entropy
        if self.method == "adam":
            self.opt.zero_grad()
            loss = loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            return float(loss.detach())
        if self.method == "ivon":
            with self.opt.sampled_params(train=True):  # type: ignore[attr-defined]
                self.opt.zero_grad()
                loss = loss_fn(self.model(x), y)
                loss.backward()
            self.opt.step()
            return float(loss.detach())

        def closure() -> Tensor:
            self.opt.zero_grad()
            out = loss_fn(self.model(x), y)
            out.backward()
            return out

        return float(self.opt.step(closure))  # type: ignore[arg-type]

    @torch.no_grad()
    def predict(self, x: Tensor, n_samples: int = TEST_SAMPLES) -> Tensor:
        """Class probabilities: posterior predictive (``n_samples`` > 0) or at the weights."""
        if self.method == "adam" or n_samples == 0:
            return torch.softmax(self.model(x), -1)
        return posterior_predictive(self.model, self.opt, x, n_samples)  # type: ignore[arg-type]


def train_run(
    task: str, method: str, hp: dict[str, Any], seed: int, split: Split, epochs: int
) -> dict[str, Any]:
    """Train one method with one seed; metrics on ``split``'s test part."""
    _, make_model = TASKS[task]
    torch.manual_seed(seed)
    model = make_model()
    n = len(split.y_train)
    trainer = _Trainer(method, model, hp, n)
    steps_per_epoch = math.ceil(n / BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(trainer.opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for k in range(steps_per_epoch):
            idx = perm[k * BATCH : (k + 1) * BATCH]
            losses.append(trainer.step(split.x_train[idx], split.y_train[idx]))
            sched.step()
    train_s = time.perf_counter() - t0
    probs = trainer.predict(split.x_test)
    if not torch.isfinite(probs).all():
        return {"accuracy": 0.0, "nll": math.inf, "ece": 1.0, "diverged": True, "train_s": train_s}
    metrics = classification_metrics(probs, split.y_test, n_bins=15)
    if method != "adam":  # also at the posterior mean, for reference
        at_mean = classification_metrics(trainer.predict(split.x_test, 0), split.y_test, n_bins=15)
        metrics.update({f"{k}_at_mean": v for k, v in at_mean.items()})
    return {**metrics, "final_train_loss": statistics.fmean(losses[-steps_per_epoch:]),
            "train_s": train_s, "diverged": False}  # fmt: skip


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _key(phase: str, task: str, method: str, hp: dict[str, Any], seed: int, epochs: int) -> str:
    return json.dumps([phase, task, method, hp, seed, epochs], sort_keys=True)


def tune(
    task: str, method: str, grid: dict[str, list[Any]], epochs: int, log, done=None
) -> dict[str, Any]:
    """The grid point with the lowest validation NLL (tuning seed, 80/20 of the train split).

    ``done`` maps :func:`_key` to rows already in the results file; those are reused.
    """
    done = {} if done is None else done
    load, _ = TASKS[task]
    val = validation_split(load(), fraction=0.2, seed=TUNE_SEED)
    scores = []
    for hp in grid_points(grid):
        r = done.get(_key("tune", task, method, hp, TUNE_SEED, epochs))
        if r is None:
            r = train_run(task, method, hp, TUNE_SEED, val, epochs)
            log({"phase": "tune", "task": task, "method": method, "hp": hp, "epochs": epochs,
                 "seed": TUNE_SEED, **r})  # fmt: skip
        scores.append((r["nll"], -r["accuracy"], hp))
    best = min(scores, key=lambda s: (s[0], s[1]))
    return best[2]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("accuracy", "nll", "ece", "train_s"):
        vals = [r[key] for r in rows]
        out[key] = statistics.fmean(vals)
        out[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def run(
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: tuple[int, ...] = SEEDS,
    epochs: dict[str, int] | None = None,
    quick: bool = False,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Tune and evaluate; returns ``{task: {method: summary}}`` plus skipped methods."""
    torch.set_num_threads(1)
    tasks = list(tasks or TASKS)
    methods = list(methods or METHODS)
    epochs = {**EPOCHS, **(epochs or {})}
    grids = QUICK_GRIDS if quick else GRIDS
    out_path = Path(out) if out is not None else RESULTS / "vi_deep.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"torch": torch.__version__, "skipped": {}, "quick": quick}
    if "ivon" in methods and (why := _ivon_available()):
        print(f"skipping ivon: {why}", file=sys.stderr)
        result["skipped"]["ivon"] = why
        methods.remove("ivon")

    def log(row: dict[str, Any]) -> None:
        with out_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    # Runs already in the file (same task, method, hyperparameters, seed, epochs) are
    # reused, so a grid can be extended without repeating its old points.
    done: dict[str, dict[str, Any]] = {}
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            r = json.loads(line)
            if r["phase"] == "choice":
                continue
            seed = r.get("seed", TUNE_SEED)
            done[_key(r["phase"], r["task"], r["method"], r["hp"], seed, r["epochs"])] = r

    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
        try:
            split = TASKS[task][0]()
        except ImportError as exc:
            why = f"{task} needs a package that is not installed ({exc})"
            print(f"skipping {task}: {why}", file=sys.stderr)
            result["skipped"][task] = why
            continue
        result[task] = {}
        for method in methods:
            hp = tune(task, method, grids[method], epochs[task], log, done)
            rows = []
            for seed in seeds:
                r = done.get(_key("test", task, method, hp, seed, epochs[task]))
                if r is None:
                    r = train_run(task, method, hp, seed, split, epochs[task])
                    log({"phase": "test", "task": task, "method": method, "hp": hp, "seed": seed,
                         "epochs": epochs[task], **r})  # fmt: skip
                rows.append(r)
            result[task][method] = {"hp": hp, "seeds": list(seeds), **summarize(rows)}
            log({"phase": "choice", "task": task, "method": method, "hp": hp,
                 "epochs": epochs[task], **result[task][method]})  # fmt: skip
            print(json.dumps({"task": task, "method": method, **result[task][method]}),
                  file=sys.stderr)  # fmt: skip
    return result


def table(path: str | Path) -> str:
    """Markdown table (mean ± sd over seeds) of the ``test`` rows of a results file.

    For each task and method it shows the hyperparameters of the last ``choice`` row (the
    tuned point) and that point's test runs.
    """
    chosen: dict[tuple[str, str], Any] = {}  # the hyperparameters of the last "choice" row
    tests: list[dict[str, Any]] = []
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if r.get("phase") == "choice":
            chosen[(r["task"], r["method"])] = (r["hp"], r["epochs"])
        elif r.get("phase") == "test":
            tests.append(r)
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {k: {} for k in chosen}
    for r in tests:
        key = (r["task"], r["method"])
        if key in chosen and chosen[key] == (r["hp"], r["epochs"]):
            groups[key][r["seed"]] = r
    out = [
        "| task | method | epochs | test accuracy (%) | test NLL | ECE (15 bins) | train s | chosen hyperparameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, method), by_seed in groups.items():
        rs = [by_seed[k] for k in sorted(by_seed)]
        s = summarize(rs)
        hp = ", ".join(f"{k}={v}" for k, v in rs[0]["hp"].items())
        out.append(
            f"| {task} | {method} | {rs[0]['epochs']} | {100 * s['accuracy']:.2f} ± "
            f"{100 * s['accuracy_std']:.2f} | {s['nll']:.4f} ± {s['nll_std']:.4f} | "
            f"{s['ece']:.4f} ± {s['ece_std']:.4f} | {s['train_s']:.1f} | {hp} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=sorted(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=sorted(GRIDS))
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="evaluation seeds 0..n-1")
    parser.add_argument("--epochs", type=int, default=None, help="override for every task")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, one grid point")
    parser.add_argument("--out", default=None, help="JSON-lines file (appended)")
    parser.add_argument(
        "--table", metavar="JSONL", help="print the markdown table of a results file"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    seeds = tuple(range(1 if args.quick else args.seeds))
    n_epochs = 2 if args.quick else args.epochs
    epochs = {t: n_epochs for t in TASKS} if n_epochs else None
    print(json.dumps(run(args.tasks, args.methods, seeds, epochs, args.quick, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
