"""Small networks shared by the deep-learning benchmarks.

* :func:`digits_mlp`: 64-64-64-10 tanh MLP for the 8×8 digits (as ``bench/optim.py``).
* :class:`CNN1D`: the MNIST-1D paper's convolutional baseline: three 1-D
  convolutions of 25 channels (kernels 5, 3, 3; stride 2; padding 1; ReLU) and a
  linear head; inputs ``(n, 40)``, 10 logits. About 5,000 parameters.

Import from a script in ``bench/`` (its folder is on ``sys.path`` when it runs)::

    from nets import CNN1D, digits_mlp
"""

from __future__ import annotations

from torch import Tensor, nn


def digits_mlp(hidden: int = 64) -> nn.Sequential:
    """64 → hidden → hidden → 10 with tanh."""
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, 10),
    )


class CNN1D(nn.Module):
    """MNIST-1D's ConvBase: inputs ``(n, length)`` (a channel axis is added), 10 logits."""

    def __init__(self, channels: int = 25, length: int = 40) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        out = length
        for k in (5, 3, 3):
            out = (out + 2 - k) // 2 + 1
        self.head = nn.Linear(channels * out, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))
