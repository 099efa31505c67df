"""K-FAC preconditioning SGD under DistributedDataParallel: the same step on any number of ranks.

Launch with ``torchrun`` (gloo on CPUs, NCCL when every rank has a GPU)::

    torchrun --standalone --nproc_per_node 2 examples/kfac_ddp.py --epochs 3
    python examples/kfac_ddp.py --epochs 3          # one process, no torch.distributed

Every rank builds the same model (DDP broadcasts rank 0's weights anyway),
draws the same permutation of the training rows, and takes its share
(rows ``rank::world``) of each global minibatch of 128.  DDP averages the
gradients in ``loss.backward()``; :class:`~natgrad.optim.KFACPreconditioner`
sums its Kronecker-factor statistics over the ranks in ``precond.step()``, so
every rank applies the step that one process would apply to the whole
minibatch (exactly so for the ``"expectation"`` and ``"empirical"`` Fishers;
with sampled targets each rank draws its own).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import distributed as dist
from torch import nn

from natgrad.optim import KFACPreconditioner


def load():
    """Standardised digits, 80/20 stratified split (the same on every rank)."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    tx = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return tx(x_tr), torch.tensor(y_tr), tx(x_te), torch.tensor(y_te)


def main(epochs: int = 3, batch: int = 128, fisher: str = "true") -> float:
    """Train; returns the test accuracy (every rank computes the same)."""
    launched = "RANK" in os.environ  # set by torchrun
    if launched:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if launched else 0
    world = dist.get_world_size() if launched else 1
    device = torch.device("cpu")
    if launched and dist.get_backend() == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    x_tr, y_tr, x_te, y_te = (t.to(device) for t in load())
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    ).to(device)
    net = nn.parallel.DistributedDataParallel(model) if launched else model
    # After init_process_group: the preconditioner reads the world size and rank here.
    precond = KFACPreconditioner(
        net, likelihood="categorical", fisher=fisher, damping=1e-2, kl_clip=1e-3, lr=0.1
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen).to(device)
        for start in range(0, len(x_tr) - batch + 1, batch):  # full batches only
            mine = perm[start : start + batch][rank::world]
            opt.zero_grad()
            F.cross_entropy(net(x_tr[mine]), y_tr[mine]).backward()
            precond.step()
            opt.step()
        with torch.no_grad():
            acc = float((model(x_te).argmax(-1) == y_te).float().mean())
        if rank == 0:
            print(f"epoch {epoch + 1}: test accuracy {acc:.3f} ({world} process(es))")
    if launched:
        dist.destroy_process_group()
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128, help="global minibatch (all ranks)")
    parser.add_argument("--fisher", default="true", choices=["true", "expectation", "empirical"])
    args = parser.parse_args()
    main(args.epochs, args.batch, args.fisher)
