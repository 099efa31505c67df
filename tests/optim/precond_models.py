"""Small networks with every supported layer type, for the preconditioner tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optim.models import mlp


def cnn1d(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1, stride=2),
        nn.Tanh(),
        nn.Conv1d(3, 2, 2, dilation=2, bias=False),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def cnn2d(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )


class Bag(nn.Module):
    """Embedding, mean over positions, Linear: one categorical output per sequence."""

    def __init__(self, vocab: int = 7, dim: int = 3, padding_idx: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.out = nn.Linear(dim, 4)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(t)).mean(1))


def one_step(precond, model, x, y, loss_fn=F.cross_entropy):
    out = model(x)
    loss_fn(out, y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    info = precond.step()
    return grads, [p.grad.clone() for p in model.parameters()], info


MODELS = {
    "mlp": (lambda: mlp(3, 5, 4), lambda g: torch.randn(12, 3, generator=g), 4),
    "cnn1d": (cnn1d, lambda g: torch.randn(6, 2, 8, generator=g), 3),
    "cnn2d": (cnn2d, lambda g: torch.randn(5, 1, 4, 4, generator=g), 3),
}
