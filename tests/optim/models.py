"""Tiny models and exact Fisher references shared by the optimiser tests."""

from __future__ import annotations

import torch
from torch import nn

from natgrad.distributions import Categorical, DiagGaussian
from natgrad.fisher import fisher_matrix
from natgrad.params import functional_model


def mlp(n_in: int = 3, hidden: int = 5, n_out: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


def gaussian(mean: torch.Tensor) -> DiagGaussian:
    """Unit-variance Gaussian over the last dimension (log σ a constant 0)."""
    return DiagGaussian(mean, torch.zeros((), dtype=mean.dtype))


def exact_fisher(model: nn.Module, family, x: torch.Tensor, params=None) -> torch.Tensor:
    """The dense Fisher of ``family(model(x))`` (``fisher_matrix``, KL-Hessian method)."""
    params = list(model.parameters()) if params is None else list(params)
    f = functional_model(model, params)
    return fisher_matrix(lambda ps, b: family(f(ps, b)), params, x, method="kl_hessian")


def closure_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targets: bool = False):
    """A natgrad closure: mean cross-entropy and the Categorical output."""

    def closure():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        return (loss, Categorical(logits), y) if targets else (loss, Categorical(logits))

    return closure


def params_copy(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]
