"""Data parallelism for the optimisers: sums over ranks with ``torch.distributed``.

Under ``torch.nn.parallel.DistributedDataParallel`` every rank holds the same
parameters and, after ``loss.backward()``, the same gradient: the mean of the
ranks' gradients.  The curvature estimates are linear in the batch, so they
combine the same way:

* **K-FAC and diagonal statistics** are kept as *sums* over the rows seen
  (``Σ ã ãᵀ``, ``Σ g gᵀ``, per-example ``Σ ĝ²``) together with their counts;
  summing both over ranks and dividing gives exactly the average over the
  whole (global) batch, however it is split.
* **Fisher-vector products and gradients** for the conjugate-gradient modes
  are averaged over ranks: ``F v = (1/N) Σ_r F_r v`` is the Fisher of the
  global batch when the N shards are of equal size (as DDP's gradient mean
  already assumes).

Each reduction is one ``all_reduce`` of one flat buffer.  Nothing here runs
when ``torch.distributed`` is not initialised or the world has one process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch import distributed as dist

from natgrad.fisher import FisherOperator
from natgrad.optim._kfac_block import KFACBlock, KFACFactorError


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def all_reduce_sum_(tensors: Sequence[Tensor]) -> None:
    """Sum ``tensors`` over ranks in place, as one flat buffer (one collective call)."""
    if world()[1] == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    pos = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[pos : pos + n].view_as(t))
        pos += n


def all_reduce_mean(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The mean over ranks of each tensor (new tensors; the inputs are left alone)."""
    out = [t.detach().clone() for t in tensors]
    size = world()[1]
    if size > 1:
        all_reduce_sum_(out)
        for t in out:
            t.div_(size)
    return out


def check_same_on_all_ranks(values: Sequence[int], what: str) -> None:
    """Raise ``ValueError`` unless every rank passes the same integers.

    Two small collective calls (max and min); used once, before the first
    reduction, so that ranks that built different models fail with a message
    instead of hanging or mixing statistics of different layers.
    """
    rank, size = world()
    if size == 1:
        return
    local = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        local = local.cuda()
    hi, lo = local.clone(), local.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        raise ValueError(
            f"the ranks disagree on {what}: rank {rank} has {list(values)}, but across the "
            f"{size} ranks the values range from {lo.int().tolist()} to {hi.int().tolist()}; "
            "build the same model (and the same preconditioner settings) on every rank"
        )


def check_gradients_averaged(grads: Sequence[Tensor], owner: str) -> None:
    """Raise ``ValueError`` unless the gradients are the same on every rank (up to 1e-6).

    Checked once, on a preconditioner's first step: without DDP (or averaging of
    one's own) each rank would precondition its own shard's gradient.
    """
    rank, size = world()
    if size == 1 or not grads:
        return
    local = torch.stack(torch._foreach_norm(list(grads))).sum().reshape(1).double()
    hi, lo = local.clone(), local.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if float(hi - lo) > 1e-6 * max(1.0, float(hi.abs())):
        raise ValueError(
            f"the gradients differ between the {size} ranks (their norms range from "
            f"{float(lo):.6g} to {float(hi):.6g}); wrap the model in "
            "torch.nn.parallel.DistributedDataParallel (or average the gradients over "
            f"ranks) before {owner}.step()"
        )


class AllReducedFisher(FisherOperator):
    """``v ↦ (1/N) Σ_r F_r v``: a rank-local Fisher operator averaged over ``N`` ranks.

    Every rank must call :meth:`mv` the same number of times with the same
    vector (conjugate gradient does, given the same right-hand side).
    """

    def __init__(self, local: FisherOperator) -> None:
        self.local = local
        self.dim = local.dim
        self.dtype = local.dtype
        self.damping = local.damping

    def _mv(self, v: Tensor) -> Tensor:
        return all_reduce_mean([self.local._mv(v)])[0]


def distributed_operator(op: FisherOperator) -> FisherOperator:
    """``op`` averaged over ranks under ``torch.distributed``, else ``op`` itself."""
    return AllReducedFisher(op) if world()[1] > 1 else op


def owners(costs: Sequence[float], size: int) -> list[int]:
    """Assign jobs to ``size`` ranks, largest first to the least loaded (the same on every rank)."""
    load = [0.0] * size
    out = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(size), key=lambda r: (load[r], r))
        out[i] = r
        load[r] += costs[i]
    return out


def invert_on_owners(blocks: Sequence[KFACBlock], damping: float) -> None:
    """K-FAC inverses computed once per layer, on the rank that owns it, then shared.

    Each layer goes to one rank (:func:`owners`, by the cost ``a³ + g³`` of its
    two inverses); that rank inverts it while the others write zeros, and one
    ``all_reduce`` sums the inverses (and a failure flag) over ranks.  The
    ``1/N`` share of the inversion work is paid for with one collective of all
    the inverses.  A factor that fails to invert raises
    :class:`~natgrad.optim.KFACFactorError` on every rank (no rank hangs).
    """
    rank, size = world()
    assign = owners([float(b.a_dim**3 + b.out_dim**3) for b in blocks], size)
    failed = torch.zeros(1, dtype=blocks[0].params[0].dtype, device=blocks[0].params[0].device)
    error: KFACFactorError | None = None
    for b, owner in zip(blocks, assign, strict=True):
        if owner == rank and error is None:
            try:
                b.invert(damping)
                continue
            except KFACFactorError as err:
                error, failed[0] = err, 1.0
        assert b.A is not None and b.G is not None
        b.A_inv, b.G_inv = torch.zeros_like(b.A), torch.zeros_like(b.G)
    tensors = [failed] + [t for b in blocks for t in (b.A_inv, b.G_inv) if t is not None]
    all_reduce_sum_(tensors)
    if error is not None:
        raise error
    if float(failed) > 0:
        raise KFACFactorError(
            "a K-FAC factor is not positive definite (or not finite) on the rank that inverts "
            "it (distribute_inverses=True); that rank's error names the layer; use a larger "
            "damping"
        )
