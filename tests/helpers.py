"""Small models shared by the core tests."""

from __future__ import annotations

import torch
from torch import nn

from natgrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from natgrad.params import functional_model

FAMILIES = ("gaussian", "categorical", "bernoulli", "multicategorical")


def make_model(family: str, n_in: int, hidden: int, n_out: int, seed: int):
    """An MLP and ``fn(params, x) -> Distribution`` for ``family``, with its params list."""
    torch.manual_seed(seed)
    if family == "multicategorical":
        nvec = [2, n_out + 1]
        width = sum(nvec)
    else:
        nvec = []
        width = n_out
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, width))
    net_params = list(net.parameters())
    f = functional_model(net, net_params)
    if family == "gaussian":
        log_std = nn.Parameter(0.3 * torch.randn(n_out))
        params = [*net_params, log_std]

        def fn(ps, x):
            return DiagGaussian(f(ps[:-1], x), ps[-1])

        return fn, params
    make = {
        "categorical": Categorical,
        "bernoulli": Bernoulli,
        "multicategorical": lambda logits: MultiCategorical(logits, nvec),
    }[family]

    def fn(ps, x):
        return make(f(ps, x))

    return fn, net_params


def load_script(path, name: str):
    """Import a script (a bench or an example) by path, so tests can call its functions."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
