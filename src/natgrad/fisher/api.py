"""Building operators by name, the dense Fisher, and the metric helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.fisher.base import METHODS, FisherOperator, ModelFn
from natgrad.fisher.empirical import EmpiricalFisher
from natgrad.fisher.ggn import GGNFisher
from natgrad.fisher.kl_hessian import KLHessianFisher


def fisher_operator(
    fn: ModelFn,
    params: Sequence[Tensor],
    batch: Any = None,
    *,
    method: str = "ggn",
    damping: float = 0.0,
    subsample: float | int | None = None,
    generator: torch.Generator | None = None,
    targets: Tensor | None = None,
) -> FisherOperator:
    """Build a Fisher operator by method name: ``"ggn"``, ``"kl_hessian"`` or ``"empirical"``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ggn":
        return GGNFisher(
            fn, params, batch, damping=damping, subsample=subsample, generator=generator
        )
    if method == "kl_hessian":
        return KLHessianFisher(
            fn, params, batch, damping=damping, subsample=subsample, generator=generator
        )
    if method == "empirical":
        if targets is None:
            raise ValueError("method='empirical' needs targets (the observed labels)")
        return EmpiricalFisher(fn, params, batch, targets, damping=damping)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def fisher_matrix(
    fn: ModelFn, params: Sequence[Tensor], batch: Any = None, *, method: str = "ggn"
) -> Tensor:
    """The dense Fisher (the seed's ``fisher_matrix``), for small models."""
    return fisher_operator(fn, params, batch, method=method).dense()


def metric_distance(delta: Tensor, metric: Tensor) -> Tensor:
    """The squared length of ``delta`` under ``metric``: ``Σᵢⱼ δᵢ Mᵢⱼ δⱼ = δᵀ M δ``.

    With the identity this is the squared Euclidean length; with the Fisher it
    is twice the KL divergence of the step, to second order.  The seed
    article's loop computes ``Σᵢⱼ δᵢ δᵢ Mᵢⱼ``, squaring ``delta[i]``: that is
    a bug (it ignores ``δⱼ`` and so every off-diagonal relation).  This is the
    correct quadratic form.

    Raises:
        ValueError: shapes that do not fit, or NaN/inf in ``delta`` or ``metric``
            (as for every vector argument of a Fisher operator).

    >>> metric_distance(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
    tensor(18.)
    """
    for name, t in (("delta", delta), ("metric", metric)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating-point tensor, got {got}")
    if delta.dim() != 1 or metric.shape != (delta.shape[0], delta.shape[0]):
        raise ValueError(
            f"delta must be a vector of length n and metric n x n, got shapes "
            f"{tuple(delta.shape)} and {tuple(metric.shape)}"
        )
    if delta.dtype != metric.dtype:
        raise ValueError(f"delta has dtype {delta.dtype} but metric has {metric.dtype}")
    for name, t in (("delta", delta), ("metric", metric)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf; the metric acts on finite vectors")
    return delta @ metric @ delta


def kl_quadratic(fisher: FisherOperator | Tensor, delta: Tensor) -> Tensor:
    """``½ δᵀ F δ``: the second-order estimate of ``KL(p_θ ‖ p_{θ+δ})`` (undamped).

    ``fisher`` is an operator or a dense matrix; a NaN or inf in ``delta`` (or
    the matrix) raises ``ValueError``, as for :meth:`FisherOperator.mv`.
    """
    if not isinstance(fisher, (Tensor, FisherOperator)):
        raise ValueError(
            f"fisher must be a FisherOperator or a Tensor, got {type(fisher).__name__}"
        )
    if isinstance(fisher, Tensor):
        return 0.5 * metric_distance(delta, fisher)
    return fisher.kl_quadratic(delta)
