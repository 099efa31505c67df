"""The preconditioners' layer types: Conv1d, Embedding, and the damped Kronecker system of each."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.optim import KFACPreconditioner
from optim.precond_models import MODELS, Bag, cnn1d, one_step


def test_conv1d_block_equals_the_conv2d_of_height_one(float64):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 2, 8, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    model = cnn1d()
    twin = nn.Sequential(
        nn.Conv2d(2, 3, (1, 3), padding=(0, 1), stride=(1, 2)),
        nn.Tanh(),
        nn.Conv2d(3, 2, (1, 2), dilation=(1, 2), bias=False),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            q.copy_(p.reshape(q.shape))
    pa = KFACPreconditioner(model, likelihood="categorical", fisher="expectation")
    pb = KFACPreconditioner(twin, likelihood="categorical", fisher="expectation")
    _, nat_a, _ = one_step(pa, model, x, y)
    _, nat_b, _ = one_step(pb, twin, x.unsqueeze(2), y)
    for a, b in zip(nat_a, nat_b, strict=True):
        torch.testing.assert_close(a, b.reshape(a.shape))


def test_embedding_block_equals_a_linear_layer_on_one_hot_inputs(float64):
    gen = torch.Generator().manual_seed(0)
    t, y = torch.randint(0, 7, (5, 4), generator=gen), torch.randint(0, 4, (5,), generator=gen)
    model = Bag()
    lin = nn.Linear(7, 3, bias=False)
    head = copy.deepcopy(model.out)
    with torch.no_grad():
        lin.weight.copy_(model.emb.weight.T)

    class OneHot(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = lin, head

        def forward(self, t):
            return self.out(torch.tanh(self.lin(F.one_hot(t, 7).double())).mean(1))

    twin = OneHot()
    pa = KFACPreconditioner(model, likelihood="categorical", fisher="expectation", damping=0.1)
    pb = KFACPreconditioner(twin, likelihood="categorical", fisher="expectation", damping=0.1)
    _, nat_a, _ = one_step(pa, model, t, y)
    _, nat_b, _ = one_step(pb, twin, t, y)
    torch.testing.assert_close(nat_a[0], nat_b[0].T)
    torch.testing.assert_close(nat_a[1:], nat_b[1:])
    torch.testing.assert_close(torch.diag(pa.blocks[0].A), pb.blocks[0].A)


def test_embedding_padding_rows_are_left_out_of_the_factors(float64):
    t = torch.tensor([[0, 1, 2, 0], [3, 0, 0, 1]])
    model = Bag(padding_idx=0)
    precond = KFACPreconditioner(model, likelihood="categorical", fisher="expectation")
    _, nat, _ = one_step(precond, model, t, torch.tensor([0, 1]))
    a = precond.blocks[0].A
    assert a[0] == 0 and a.sum() == pytest.approx(1.0)
    torch.testing.assert_close(a[1:4], torch.tensor([0.5, 0.25, 0.25]))
    assert torch.equal(nat[0][0], torch.zeros(3))


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(2, 7),
    damping=st.sampled_from([1e-3, 1e-1, 1.0]),
    name=st.sampled_from(["mlp", "cnn1d", "cnn2d", "bag"]),
)
def test_step_solves_the_damped_kronecker_system(float64, seed, batch, damping, name):
    """Defining property: (A + π√λ I) ⊗ (G + √λ/π I) applied to the step gives the gradient back."""
    gen = torch.Generator().manual_seed(seed)
    if name == "bag":
        make, classes, x = Bag, 4, torch.randint(0, 7, (batch, 5), generator=gen)
    else:
        make, inputs, classes = MODELS[name]
        x = inputs(gen)
    y = torch.randint(0, classes, (len(x),), generator=gen)
    model = make()
    p = KFACPreconditioner(model, likelihood="categorical", damping=damping, seed=seed)
    grads, nat, _ = one_step(p, model, x, y)
    by_param = dict(zip(map(id, model.parameters()), zip(grads, nat, strict=True), strict=True))
    for b in p.blocks:
        g = b.grad_matrix([by_param[id(q)][0] for q in b.params])
        m = b.grad_matrix([by_param[id(q)][1] for q in b.params])
        a_mat = torch.diag(b.A) if b.A.dim() == 1 else b.A
        ta, tg = float(a_mat.diagonal().mean()), float(b.G.diagonal().mean())
        pi = (ta / tg) ** 0.5
        eye_a, eye_g = torch.eye(len(a_mat)), torch.eye(len(b.G))
        a_d, g_d = a_mat + pi * damping**0.5 * eye_a, b.G + damping**0.5 / pi * eye_g
        back = g_d @ m @ a_d if b.A.dim() == 2 else a_d @ m @ g_d  # Embedding: rows are tokens
        torch.testing.assert_close(back, g, atol=1e-9, rtol=1e-7)
