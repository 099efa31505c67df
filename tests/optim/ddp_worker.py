"""What the data-parallel tests run: on 2 gloo ranks (spawned) and in one process.

Each training function takes the model (DDP-wrapped or not) and the rows it
sees, so the same code gives the 2-rank result (each rank half the batch) and
the single-process reference (the whole batch).  ``python tests/optim/ddp_worker.py``
prints the largest difference of each scenario (a check of an installation).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from natgrad.optim import DiagonalPreconditioner, KFACPreconditioner, NaturalGradient

BATCH = 16
STEPS = 3


def make_model(hidden: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 3, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(18, hidden),
        nn.Tanh(),
        nn.Linear(hidden, 4),
    )


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 1, 6, generator=gen)
    return x, torch.randint(0, 4, (BATCH,), generator=gen)


def shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = len(t) // world
    return t[rank * n : (rank + 1) * n]


def _copy(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None  # set by the backward / the first step
    return t.detach().clone()


def train_preconditioned(
    kind: str, fisher: str, rank: int = 0, world: int = 1, ddp: bool = False, **options: Any
) -> dict[str, Any]:
    """SGD + momentum preconditioned by K-FAC or the diagonal; grads and params at every step."""
    model = make_model()
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if ddp else model
    cls = KFACPreconditioner if kind == "kfac" else DiagonalPreconditioner
    extra = {"inv_update_every": 2, **options} if kind == "kfac" else options
    settings = {"damping": 1e-2, "factor_decay": 0.9, "kl_clip": 1e-3, "lr": 0.1, **extra}
    precond = cls(net, likelihood="categorical", fisher=fisher, seed=0, **settings)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grads, scales, first_A = [], [], []
    for step in range(STEPS):
        x, y = (shard(t, rank, world) for t in data(step))
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        scales.append(precond.step().kl_scale)
        grads.append([_copy(p.grad) for p in model.parameters()])
        if kind == "kfac" and step == 0:
            first_A = [_copy(b.A) for b in precond.blocks]
        opt.step()
    out: dict[str, Any] = {"grads": grads, "scales": scales}
    out["params"] = [p.detach().clone() for p in model.parameters()]
    if kind == "kfac":
        out["A"], out["first_A"] = [_copy(b.A) for b in precond.blocks], first_A
        out["G"] = [_copy(b.G) for b in precond.blocks]
    return out


def train_natural_gradient(
    rank: int = 0, world: int = 1, ddp: bool = False, fisher: str = "ggn"
) -> list[torch.Tensor]:
    """NaturalGradient with CG (``fisher`` "ggn", "kl_hessian" or "empirical"), two steps."""
    model = make_model()
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if ddp else model
    opt = NaturalGradient(
        model.parameters(),
        max_kl=1e-2,
        damping=1e-2,
        cg_iters=10,
        fisher=fisher,
        likelihood="categorical",
    )
    for step in range(2):
        x, y = (shard(t, rank, world) for t in data(step))

        def closure(x=x, y=y):
            logits = net(x)
            return F.cross_entropy(logits, y), logits, y

        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


def _error(fn) -> str:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return "no error"


def _one_step(precond: Any, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    F.cross_entropy(net(x), y).backward()
    precond.step()


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """The 2-rank side: every scenario, results saved to ``out_dir/rank{rank}.pt``."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    res: dict[str, Any] = {}
    x, y = (shard(t, rank, world) for t in data(0))
    early_model = make_model()
    early = KFACPreconditioner(early_model, likelihood="categorical")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        res["err_world"] = _error(lambda: _one_step(early, early_model, x, y))
        early.remove_hooks()
        for kind in ("kfac", "diag"):
            for fisher in ("expectation", "empirical"):
                res[f"{kind}_{fisher}"] = train_preconditioned(kind, fisher, rank, world, ddp=True)
        res["kfac_true"] = train_preconditioned("kfac", "true", rank, world, ddp=True)
        res["kfac_kaisa"] = train_preconditioned(
            "kfac", "expectation", rank, world, ddp=True, distribute_inverses=True
        )
        # A damping too small to rescue module 3's singular A factor (its owner fails),
        # yet not 0, which is refused on every rank for the softmax's singular G.
        res["err_inverse"] = _error(
            lambda: train_preconditioned(
                "kfac",
                "empirical",
                rank,
                world,
                ddp=True,
                distribute_inverses=True,
                damping=1e-300,
            )
        )
        res["err_undamped"] = _error(
            lambda: train_preconditioned(
                "kfac", "empirical", rank, world, ddp=True, distribute_inverses=True, damping=0.0
            )
        )
        for fisher in ("ggn", "kl_hessian", "empirical"):
            res[f"ngd_{fisher}"] = train_natural_gradient(rank, world, ddp=True, fisher=fisher)
        # No DDP: every rank keeps its own shard's gradient.
        plain = make_model()
        res["err_not_averaged"] = _error(
            lambda: _one_step(KFACPreconditioner(plain, likelihood="categorical"), plain, x, y)
        )
        other = make_model(hidden=5 + rank)
        res["err_layout"] = _error(
            lambda: _one_step(KFACPreconditioner(other, likelihood="categorical"), other, x, y)
        )
        ng = NaturalGradient(
            plain.parameters(),
            lr=0.1,
            fisher="kfac",
            model=plain,
            likelihood="categorical",
            fisher_options={"unsupported": "diag"},
        )
        res["err_ngd_kfac"] = _error(
            lambda: ng.step(lambda: (F.cross_entropy(plain(x), y), plain(x)))
        )
    finally:
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(out_dir: str) -> list[dict[str, Any]]:
    """Run :func:`worker` on 2 spawned gloo ranks; their results.

    The children import this module by name (``optim.ddp_worker``): for the time
    of the spawn, ``tests/`` goes first on ``sys.path`` (which they copy), so that
    no other ``optim`` (``bench/optim.py``, once ``bench/`` is on the path) shadows it.
    """
    import torch.multiprocessing as mp

    saved = list(sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        mp.spawn(worker, args=(2, free_port(), out_dir), nprocs=2, join=True)
    finally:
        sys.path[:] = saved
    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(2)]


def main() -> int:
    """Print the largest difference between 2 ranks and one process, per scenario."""
    with tempfile.TemporaryDirectory() as out:
        ranks = spawn(out)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        worst = 0.0
        for kind in ("kfac", "diag"):
            for fisher in ("expectation", "empirical"):
                ref = train_preconditioned(kind, fisher)["params"]
                got = ranks[0][f"{kind}_{fisher}"]["params"]
                diff = max(float((a - b).abs().max()) for a, b in zip(got, ref, strict=True))
                worst = max(worst, diff)
                print(f"{kind:5s} {fisher:12s} max |2 ranks - 1 process| = {diff:.2e}")
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(ranks[0]["ngd_ggn"], train_natural_gradient(), strict=True)
        )
        worst = max(worst, diff)
        print(f"NaturalGradient(ggn)  max |2 ranks - 1 process| = {diff:.2e}")
    finally:
        torch.set_default_dtype(old)
    return 0 if worst < 1e-6 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from optim import ddp_worker  # the children must find this module by its package name

    sys.exit(ddp_worker.main())
