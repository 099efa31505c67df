import copy

import pytest
import torch
from torch import nn

from natgrad.rl.algos.critic import MLPCriticTrainer, fit_critic_autograd, supports_fast_path
from natgrad.rl.policies import Tanh, mlp


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("batch_size", [32, 100])
def test_fast_path_equals_autograd_adam(activation, batch_size):
    torch.manual_seed(0)
    net = mlp(5, (16, 8), 1, activation=activation).double()
    twin = copy.deepcopy(net)
    x = torch.randn(300, 5, dtype=torch.float64)
    y = torch.randn(300, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    kw = dict(epochs=3, batch_size=batch_size)
    loss_a = fit_critic_autograd(net, opt, x, y, generator=torch.Generator().manual_seed(1), **kw)
    trainer = MLPCriticTrainer(twin, lr=3e-3)
    loss_b = trainer.fit(x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-12)
    # The module's parameters are views of the trainer's flat vector: one source of truth.
    assert twin[0].weight.data_ptr() == trainer.flat.data_ptr()


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = mlp(4, (8,), 1)
    b = copy.deepcopy(a)
    x, y = torch.randn(64, 4), torch.randn(64)
    ta, tb = MLPCriticTrainer(a, lr=1e-2), MLPCriticTrainer(b, lr=1e-2)
    ta.fit(x, y, epochs=2, batch_size=16, generator=torch.Generator().manual_seed(0))
    tb.fit(x, y, epochs=2, batch_size=16, generator=torch.Generator().manual_seed(0))
    c = copy.deepcopy(b)
    tc = MLPCriticTrainer(c, lr=1e-2)
    tc.load_state_dict(tb.state_dict())
    ta.fit(x, y, epochs=1, batch_size=16, generator=torch.Generator().manual_seed(5))
    tc.fit(x, y, epochs=1, batch_size=16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ta.flat, tc.flat)
    with pytest.raises(ValueError, match="entries"):
        MLPCriticTrainer(mlp(4, (9,), 1), lr=1e-2).load_state_dict(tb.state_dict())


def test_which_critics_take_the_fast_path():
    assert supports_fast_path(mlp(3, (4, 4), 1))
    assert not supports_fast_path(mlp(3, (4,), 2))
    assert not supports_fast_path(nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 1)))
    assert not supports_fast_path(nn.Linear(3, 1))
    with pytest.raises(ValueError, match="not a plain MLP"):
        MLPCriticTrainer(nn.Sequential(nn.Linear(3, 1, bias=False)), lr=1e-3)


def test_fast_tanh_matches_torch_tanh():
    x = torch.linspace(-20, 20, 10001)
    assert torch.allclose(Tanh()(x), torch.tanh(x), atol=2e-7)
