"""Bad input to the drop-in preconditioners: each case gets a clear error (or a reported skip)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from natgrad.optim import DiagonalPreconditioner, KFACPreconditioner
from optim.models import mlp

CLASSES = [KFACPreconditioner, DiagonalPreconditioner]


def batch(n: int = 8):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=gen), torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize("cls", CLASSES)
def test_model_without_supported_layers_lists_the_supported_types(cls):
    model = nn.Sequential(nn.LayerNorm(3), nn.Tanh(), nn.BatchNorm1d(3))
    with pytest.raises(ValueError) as err:
        cls(model, likelihood="categorical")
    msg = str(err.value)
    assert "found no layer it can precondition in the Sequential" in msg
    assert "nn.Linear, nn.Conv1d and nn.Conv2d (groups=1), and nn.Embedding" in msg
    assert "'0' (LayerNorm), '2' (BatchNorm1d)" in msg
    with pytest.raises(ValueError, match="modules with trainable parameters: none"):
        cls(nn.Tanh(), likelihood="categorical")
    grouped = nn.Conv2d(2, 2, 3, groups=2)
    with pytest.raises(ValueError, match=r"'<root>' \(Conv2d\)"):
        cls(grouped, likelihood="categorical")


@pytest.mark.parametrize("cls", CLASSES)
def test_step_before_any_backward(cls):
    model = mlp()
    p = cls(model, likelihood="categorical")
    with pytest.raises(ValueError, match=r"call loss.backward\(\) before precond.step\(\)"):
        p.step()
    x, y = batch()
    model(x)  # a forward, still no backward: no gradients at all
    with pytest.raises(ValueError, match="parameters were probably replaced"):
        p.step()


@pytest.mark.parametrize("cls", CLASSES)
def test_step_after_a_forward_but_before_its_backward(cls):
    model = mlp()
    p = cls(model, likelihood="categorical")
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    p.step()
    model(x)  # the next forward; the gradients of the last backward are still there
    with pytest.raises(ValueError, match=r"before its backward; call loss.backward\(\) first"):
        p.step()


@pytest.mark.parametrize("cls", CLASSES)
def test_no_captured_forward_when_factors_are_due(cls):
    model = mlp()
    p = cls(model, likelihood="categorical")
    x, y = batch()
    model.eval()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match=r"no training forward .* \(model.train\(\)\)"):
        p.step()


@pytest.mark.parametrize("cls", CLASSES)
def test_model_copied_after_the_preconditioner_was_made(cls):
    model = mlp()
    p = cls(model, likelihood="categorical")
    copied = copy.deepcopy(model)
    x, y = batch()
    F.cross_entropy(copied(x), y).backward()
    with pytest.raises(ValueError, match="if that model was copied after the preconditioner"):
        p.step()


@pytest.mark.parametrize("cls", CLASSES)
def test_layer_replaced_after_the_preconditioner_was_made(cls):
    model = mlp()
    p = cls(model, likelihood="categorical")
    model[2] = nn.Linear(5, 4)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match=r"layer 2 \(Linear.*was not called.*replaced or wrapped"):
        p.step()


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("where", ["gradient", "input"])
def test_non_finite_step_is_skipped_reported_and_factors_unchanged(cls, where):
    model = mlp()
    p = cls(model, likelihood="categorical")
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    p.step()
    before = copy.deepcopy(p.state_dict()["factors"])
    model.zero_grad()
    bad = x.clone()
    if where == "input":
        bad[0, 0] = math.inf
    loss = F.cross_entropy(model(bad), y)
    (loss * math.nan if where == "gradient" else loss).backward()
    with pytest.warns(RuntimeWarning, match="not finite at step 2; the step is skipped"):
        info = p.step()
    assert info.status == "non_finite" and not info.factors_updated and info.grad_dot is None
    assert all(q.grad is None for q in model.parameters())
    after = p.state_dict()["factors"]
    flat = lambda s: [t for t in torch.utils._pytree.tree_leaves(s) if isinstance(t, torch.Tensor)]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(flat(before), flat(after), strict=True))
    assert p.skipped_steps == 1 and p.steps == 2
    # the next good batch steps as usual
    F.cross_entropy(model(x), y).backward()
    assert p.step().status == "preconditioned"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fisher": "exact"}, "fisher must be one of"),
        ({"likelihood": "cross_entropy"}, "likelihood must be 'categorical'"),
        ({"likelihood_std": 0.0}, "likelihood_std must be a finite number > 0"),
        ({"damping": -1.0}, "damping must be a finite number >= 0"),
        ({"factor_decay": 1.0}, r"factor_decay must be in \[0, 1\)"),
        ({"update_factors_every": 0}, "update_factors_every must be an int >= 1"),
        ({"kl_clip": 1e-3}, "kl_clip needs the optimiser's learning rate"),
        ({"kl_clip": 0.0, "lr": 0.1}, "kl_clip must be a finite number > 0"),
        ({"lr": -0.1}, "lr must be a finite number > 0"),
        ({"skip_layers": "0"}, "skip_layers must be a list"),
        ({"n_samples": 2, "fisher": "empirical"}, "n_samples=2 applies to fisher='true' only"),
        ({"seed": 1.5}, "seed must be an int or None"),
    ],
)
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_options(cls, kwargs, match):
    args = {"likelihood": "categorical", **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(mlp(), **args)


def test_bad_inverse_period_and_model_type():
    with pytest.raises(ValueError, match="inv_update_every must be an int >= 1"):
        KFACPreconditioner(mlp(), likelihood="categorical", inv_update_every=0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        KFACPreconditioner([torch.zeros(2)], likelihood="categorical")  # type: ignore[arg-type]


@given(value=st.one_of(st.floats(max_value=-1e-12), st.just(math.nan), st.just(math.inf)))
def test_bad_damping_values(value):
    with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
        KFACPreconditioner(mlp(), likelihood="categorical", damping=value)


@given(value=st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0), st.just(math.nan)))
def test_bad_factor_decay_values(value):
    with pytest.raises(ValueError, match="factor_decay must be in"):
        DiagonalPreconditioner(mlp(), likelihood="categorical", factor_decay=value)


def test_a_schedule_returning_a_bad_damping_is_reported_at_the_step():
    model = mlp()
    p = KFACPreconditioner(model, likelihood="categorical", damping=lambda k: -1.0)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="returned by the schedule at step 0"):
        p.step()


def test_lr_callable_returning_a_bad_value_is_reported_at_the_step():
    model = mlp()
    p = KFACPreconditioner(model, likelihood="categorical", kl_clip=1e-3, lr=lambda: 0.0)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        p.step()


def test_model_output_that_is_not_a_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, x):
            return self.lin(x), x

    model = Pair()
    KFACPreconditioner(model, likelihood="categorical")
    with pytest.raises(ValueError, match="the model returned a tuple, not a Tensor of logits"):
        model(torch.randn(2, 3))
    other = Pair()
    KFACPreconditioner(other, likelihood=lambda out: out[0])
    with pytest.raises(ValueError, match="likelihood callable returned a Tensor"):
        other(torch.randn(2, 3))


def test_state_dict_of_other_layers_is_refused():
    p = KFACPreconditioner(mlp(), likelihood="categorical")
    q = KFACPreconditioner(nn.Linear(3, 4), likelihood="categorical")
    with pytest.raises(ValueError, match=r"state_dict is for the layers \['0', '2'\]"):
        q.load_state_dict(p.state_dict())


def test_shared_parameters_are_refused():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(3, 3))
    model[2].weight = lin.weight
    with pytest.raises(ValueError, match="is shared with another module"):
        KFACPreconditioner(model, likelihood="categorical")


@pytest.mark.parametrize("cls", CLASSES)
def test_non_finite_gradient_on_a_step_without_factor_update_is_skipped(cls):
    model = mlp()
    p = cls(model, likelihood="categorical", update_factors_every=2)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    p.step()
    before = copy.deepcopy(p.state_dict()["factors"])
    model.zero_grad()
    (F.cross_entropy(model(x), y) * math.inf).backward()
    with pytest.warns(RuntimeWarning, match="the step is skipped"):
        info = p.step()
    assert info.status == "non_finite" and all(q.grad is None for q in model.parameters())
    flat = lambda s: [t for t in torch.utils._pytree.tree_leaves(s) if isinstance(t, torch.Tensor)]  # noqa: E731
    assert all(
        torch.equal(a, b)
        for a, b in zip(flat(before), flat(p.state_dict()["factors"]), strict=True)
    )


def test_non_finite_gradient_of_an_unpreconditioned_layer_skips_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Linear(5, 4))
    p = KFACPreconditioner(model, likelihood="categorical", skip_layers=["LayerNorm"])
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    model[1].weight.grad[0] = math.nan
    with pytest.warns(RuntimeWarning, match="the step is skipped"):
        assert p.step().status == "non_finite"
