"""Benchmark: K-FAC inverses on every rank, or each layer's on one rank (KAISA's idea).

``KFACPreconditioner(distribute_inverses=True)`` assigns each layer to one
rank (largest inversion cost first, to the least loaded rank); that rank
computes the layer's two damped inverses and one ``all_reduce`` shares all
of them.  This trades ``(N − 1)/N`` of the inversion work for one
collective of every inverse.

Set-up: N gloo processes on this machine (spawned, one torch thread each),
an MLP ``width → width → width → 10`` (tanh) under DDP, a per-rank batch of
64, factors and inverses updated at every step (``inv_update_every=1``, the
worst case for inversions).  Reported: the median over ``--steps`` steps of
``precond.step()`` (factor all-reduce, inversion, preconditioning), for both
settings, measured alternately in one run; the ``loss.backward()`` time for
scale.

Usage::

    python bench/kaisa.py --width 512 --ranks 2      # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from natgrad.optim import KFACPreconditioner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, size: int, port: int, width: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size
    )
    torch.manual_seed(0)
    runs = {}
    for spread in (False, True):
        model = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
            nn.Linear(width, 10),
        )  # fmt: skip
        runs[spread] = (
            model,
            nn.parallel.DistributedDataParallel(model),
            KFACPreconditioner(
                model,
                likelihood="categorical",
                damping=1e-2,
                inv_update_every=1,
                distribute_inverses=spread,
                seed=0,
            ),
        )
    times: dict[str, list[float]] = {"all_ranks": [], "spread": [], "backward": []}
    gen = torch.Generator().manual_seed(rank)
    for i in range(steps + 2):
        x = torch.randn(64, width, generator=gen)
        y = torch.randint(0, 10, (64,), generator=gen)
        for spread, (model, ddp, precond) in runs.items():
            model.zero_grad()
            loss = F.cross_entropy(ddp(x), y)
            t0 = time.perf_counter()
            loss.backward()
            t1 = time.perf_counter()
            precond.step()
            t2 = time.perf_counter()
            if i >= 2:
                times["spread" if spread else "all_ranks"].append(t2 - t1)
                if not spread:
                    times["backward"].append(t1 - t0)
    result = {k: round(1e3 * statistics.median(v), 3) for k, v in times.items()}
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run(width: int = 512, ranks: int = 2, steps: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(ranks, _free_port(), width, steps, out), nprocs=ranks)
        per_rank = [torch.load(Path(out) / f"rank{r}.pt") for r in range(ranks)]
    slowest = {k: max(r[k] for r in per_rank) for k in per_rank[0]}
    return {
        "benchmark": "kaisa_inverses",
        "width": width,
        "ranks": ranks,
        "steps": steps,
        "precond_step_ms_all_ranks_invert": slowest["all_ranks"],
        "precond_step_ms_spread": slowest["spread"],
        "speedup": round(slowest["all_ranks"] / slowest["spread"], 3),
        "backward_ms": slowest["backward"],
        "per_rank": per_rank,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.width, args.ranks, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
