"""The tasks and optimisers (arms) of ``bench/optim_targets.py``.

Add an entry to :data:`ARMS` to compare another optimiser: a function
``make(model, lr, n_train) -> step(x, y)`` doing one training step on a minibatch, its
learning-rate grid (5 values, and 2 for ``--quick``), and optional per-task
epoch caps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import Split, digits, mnist1d  # noqa: E402

from natgrad.optim import KFACPreconditioner, NaturalGradient  # noqa: E402
from natgrad.vi import VariationalOnlineNewton  # noqa: E402

Step = Callable[[Tensor, Tensor], None]


@dataclass(frozen=True)
class Task:
    """A data set, a model and a target accuracy."""

    title: str
    load: Callable[[], Split]
    model: Callable[[], nn.Module]
    target: float
    epochs: int


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2, stride=2),
        nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(320, 10),
    )


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )


TASKS = {
    "mnist1d_cnn": Task("MNIST-1D, 1-D CNN", mnist1d, _cnn, 0.90, 30),
    "digits_mlp": Task("digits, MLP 64-64-64", digits, _mlp, 0.95, 30),
}


def _first_order(opt: torch.optim.Optimizer, model: nn.Module) -> Step:
    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def make_sgd(model: nn.Module, lr: float, n_train: int = 0) -> Step:
    return _first_order(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), model)


def make_adam(model: nn.Module, lr: float, n_train: int = 0) -> Step:
    return _first_order(torch.optim.Adam(model.parameters(), lr=lr), model)


def make_kfac(model: nn.Module, lr: float, n_train: int = 0, update_factors_every: int = 5) -> Step:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    precond = KFACPreconditioner(
        model,
        likelihood="categorical",
        damping=1e-2,
        factor_decay=0.95,
        update_factors_every=update_factors_every,
        inv_update_every=10,
        kl_clip=1e-3,
        lr=lr,
        seed=0,
    )

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        precond.step()
        opt.step()

    return step


def make_ngd_ggn(model: nn.Module, lr: float, n_train: int = 0) -> Step:
    opt = NaturalGradient(
        model.parameters(), lr=lr, damping=1e-2, cg_iters=10, likelihood="categorical"
    )

    def step(x: Tensor, y: Tensor) -> None:
        def closure():
            logits = model(x)
            return F.cross_entropy(logits, y), logits

        opt.step(closure)

    return step


VI_HESS_INIT = 0.5  # bench/vi_deep.py's chosen point on MNIST-1D (docs/vi.md)
VI_BETA2 = 0.999
VI_WEIGHT_DECAY = 1e-4


def make_ngvi(model: nn.Module, lr: float, n_train: int = 0) -> Step:
    """Natural-gradient VI (``natgrad.vi.VariationalOnlineNewton``), one weight sample a step.

    ``lr`` is in ivon-opt's units, as in ``bench/vi_deep.py`` (natgrad's ``lr`` is
    ``lr · (h₀ + δ)``); ``ess`` is the number of training rows.  Accuracy is taken
    at the posterior mean (the model's weights), as for the other arms.
    """
    opt = VariationalOnlineNewton(
        model.parameters(),
        lr=lr * (VI_HESS_INIT + VI_WEIGHT_DECAY),
        ess=max(n_train, 1),
        betas=(0.9, VI_BETA2),
        weight_decay=VI_WEIGHT_DECAY,
        hess_init=VI_HESS_INIT,
        mc_samples=1,
    )

    def step(x: Tensor, y: Tensor) -> None:
        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)

    return step


@dataclass(frozen=True)
class Arm:
    """An optimiser: how to build its step, its learning-rate grid, and epoch caps.

    ``make(model, lr, n_train)`` returns a function doing one step on a minibatch.
    """

    label: str
    make: Callable[..., Step]
    grid: list[float]
    quick_grid: list[float]
    max_epochs: dict[str, int] = field(default_factory=dict)


ARMS = {
    "sgd": Arm("SGD + momentum", make_sgd, [0.01, 0.03, 0.1, 0.3, 1.0], [0.03, 0.1]),
    "adam": Arm("Adam", make_adam, [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], [1e-3, 3e-3]),
    "kfac": Arm("K-FAC preconditioning SGD", make_kfac, [0.01, 0.03, 0.1, 0.3, 1.0], [0.1, 0.3]),
    "ngd_ggn": Arm(
        "NaturalGradient (GGN + CG)",
        make_ngd_ggn,
        [0.03, 0.1, 0.3, 1.0, 3.0],
        [0.3, 1.0],
        {"mnist1d_cnn": 10},
    ),
    "ngvi": Arm(
        "natural-gradient VI (VariationalOnlineNewton)",
        make_ngvi,
        [0.1, 0.2, 0.5, 1.0, 2.0],
        [0.5, 1.0],
    ),
}
