"""bench/fvp_peers.py multiplies by the same matrix as natgrad (float64), or skips cleanly."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import load_script
from natgrad.distributions import Categorical, DiagGaussian
from natgrad.fisher import GGNFisher
from natgrad.params import functional_model

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
peers = load_script(BENCH / "fvp_peers.py", "bench_fvp_peers")
nets = load_script(BENCH / "nets.py", "bench_nets")
F64 = torch.float64


def cnn_case():
    torch.manual_seed(0)
    model = nets.CNN1D(channels=4).double()
    params = list(model.parameters())
    x = torch.randn(6, 40, dtype=F64)
    y = torch.randint(0, 10, (6,))
    f = functional_model(model, params)
    ours = GGNFisher(lambda ps, b: Categorical(f(ps, b)), params, x)
    v = torch.randn(sum(p.numel() for p in params), dtype=F64)
    return model, params, x, y, ours, v


def mlp_case():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    params = list(net.parameters())
    x = torch.randn(9, 5, dtype=F64)
    f = functional_model(net, params)
    log_std = torch.zeros(3, dtype=F64)  # σ = 1: the Fisher is Jᵀ J / B
    ours = GGNFisher(lambda ps, b: DiagGaussian(f(ps, b), log_std), params, x)
    v = torch.randn(sum(p.numel() for p in params), dtype=F64)
    return net, params, x, ours, v


def test_curvlinops_ggn_equals_natgrads_fisher():
    pytest.importorskip("curvlinops")
    model, params, x, y, ours, v = cnn_case()
    got = peers.curvlinops_ggn(model, nn.CrossEntropyLoss(), params, x, y).mv(v)
    torch.testing.assert_close(got, ours.mv(v), rtol=1e-10, atol=1e-12)
    net, params, x, ours, v = mlp_case()
    got = peers.curvlinops_ggn(net, nn.MSELoss(), params, x, torch.zeros(9, 3, dtype=F64)).mv(v)
    # MSELoss(mean) averages over the 3 outputs and has Hessian 2: GGN = (2/3) Jᵀ J / B
    torch.testing.assert_close(got, (2 / 3) * ours.mv(v), rtol=1e-10, atol=1e-12)


def test_nngeometry_fim_equals_natgrads_fisher(float64):
    # (nngeometry builds helper matrices in the default dtype: the fixture makes it float64)
    pytest.importorskip("nngeometry")
    model, params, x, y, ours, v = cnn_case()
    got = peers.nngeometry_fim(model, x, "classif_logits").mv(v)
    # nngeometry guards a division with machine eps, so agreement is ~1e-12, not exact
    torch.testing.assert_close(got, ours.mv(v), rtol=1e-9, atol=1e-12)
    assert not x.requires_grad  # it was handed a copy
    net, params, x, ours, v = mlp_case()
    torch.testing.assert_close(peers.nngeometry_fim(net, x, "regression").mv(v), ours.mv(v))


def test_missing_packages_are_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "curvlinops", None)  # import now raises ImportError
    why = peers.unavailable("curvlinops")
    assert why and "curvlinops-for-pytorch" in why and "--no-deps" in why
    monkeypatch.setitem(sys.modules, "nngeometry", None)
    assert "nngeometry" in peers.unavailable("nngeometry")
