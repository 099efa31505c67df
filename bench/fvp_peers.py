"""The curvature libraries that ``bench/fvp.py`` measures natgrad against.

Each builder takes the model, the batch and the flat parameter order of the
natgrad side and returns an object with ``mv(v)`` on a flat vector, so one
timing loop serves all:

* :func:`curvlinops_ggn`: curvlinops' ``GGNLinearOperator`` (``torch.func``
  jvp → loss Hessian → vjp, recomputed per product; ``check_deterministic=False``
  and ``num_data`` given, so its constructor makes no passes over the data);
* :func:`nngeometry_fim`: nngeometry's ``FIM(..., PMatImplicit)`` with the closed-form
  output Fisher (``classif_logits``, or ``regression`` for a unit-variance
  Gaussian); its ``mv`` makes a forward and two backward passes per output;
* :func:`curvlinops_kfac`: curvlinops' ``KFACLinearOperator`` (factors) and
  ``KFACInverseLinearOperator`` (damped inverse), the K-FAC peer that installs
  here (kfac-pytorch is not on PyPI).

Missing packages are reported by :func:`unavailable` and the arm is skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

KFAC_PYTORCH = (
    "kfac-pytorch is not on PyPI (the PyPI name 'kfac' is TensorFlow's K-FAC), so its "
    "factor update + inverse time is not measured; curvlinops' K-FAC stands in"
)


def unavailable(package: str) -> str | None:
    """Why ``package`` (``curvlinops`` or ``nngeometry``) cannot be used, or None."""
    try:
        importlib.import_module(package)
    except Exception as exc:  # ImportError, or a broken dependency such as torchvision
        pip = {"curvlinops": "curvlinops-for-pytorch", "nngeometry": "nngeometry"}[package]
        return (
            f"{package} is not importable ({type(exc).__name__}: {exc}); `make setup` installs "
            f"{pip} with --no-deps (see the Makefile)"
        )
    return None


class _Flat:
    """Adapts a list-format product to flat vectors in ``params`` order."""

    def __init__(self, params: Sequence[Tensor], mv_list) -> None:
        self.params = list(params)
        self._mv_list = mv_list

    def mv(self, v: Tensor) -> Tensor:
        parts = torch.split(v, [p.numel() for p in self.params])
        vs = [t.view_as(p) for t, p in zip(parts, self.params, strict=True)]
        return torch.cat([t.reshape(-1) for t in self._mv_list(vs)])


def curvlinops_ggn(
    model: nn.Module, loss_func: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor
) -> _Flat:
    """curvlinops' GGN of ``loss_func(model(x), y)`` with respect to ``params``."""
    from curvlinops import GGNLinearOperator

    op = GGNLinearOperator(
        model, loss_func, list(params), [(x, y)], check_deterministic=False, num_data=len(x)
    )
    return _Flat(params, lambda vs: op @ vs)


def nngeometry_fim(model: nn.Module, x: Tensor, variant: str) -> _Flat:
    """nngeometry's implicit Fisher of ``model`` on ``x`` (its own parameter order)."""
    from nngeometry.layercollection import LayerCollection
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatImplicit
    from nngeometry.object.vector import PVector

    # nngeometry sets requires_grad on the inputs it is given: hand it its own copy.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x.detach().clone()), batch_size=len(x)
    )
    lc = LayerCollection.from_model(model)
    fim = FIM(model, loader, PMatImplicit, variant=variant, layer_collection=lc)
    order = _nngeometry_order(model, lc)

    def mv_list(vs: list[Tensor]) -> list[Tensor]:
        out = fim.mv(PVector(lc, vector_repr=torch.cat([vs[i].reshape(-1) for i in order])))
        flat = out.to_torch()
        pieces = torch.split(flat, [vs[i].numel() for i in order])
        result: list[Tensor] = [torch.empty(0)] * len(vs)
        for i, piece in zip(order, pieces, strict=True):
            result[i] = piece.view_as(vs[i])
        return result

    return _Flat(list(model.parameters()), mv_list)


def _nngeometry_order(model: nn.Module, lc: Any) -> list[int]:
    """Indices into ``model.parameters()`` in nngeometry's flat-vector order."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    modules = dict(model.named_modules())
    order = []
    for layer_id, layer in lc.layers.items():
        mod = modules[layer_id]
        order.append(index[id(mod.weight)])
        if layer.bias is not None:
            order.append(index[id(mod.bias)])
    if sorted(order) != list(range(len(index))):
        raise ValueError("nngeometry's layer collection does not cover the model's parameters")
    return order


def curvlinops_kfac(
    model: nn.Module,
    loss_func: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    damping: float,
    seed: int = 0,
):
    """curvlinops' K-FAC (one MC sample per input) and its damped inverse.

    Weight and bias share one Kronecker block, as in natgrad's K-FAC.
    """
    from curvlinops import KFACInverseLinearOperator, KFACLinearOperator

    kfac = KFACLinearOperator(
        model, loss_func, list(params), [(x, y)], fisher_type="mc", mc_samples=1, seed=seed,
        check_deterministic=False, num_data=len(x), separate_weight_and_bias=False,
    )  # fmt: skip
    return KFACInverseLinearOperator(kfac, damping=damping)
