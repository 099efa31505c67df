"""The Fisher operator interface, an explicit matrix behind it, and shared set-up."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.linalg.cg import CGResult, MatVec, cg
from natgrad.params import as_param_list, numel

ModelFn = Callable[[Sequence[Tensor], Any], Distribution]
METHODS = ("ggn", "kl_hessian", "empirical")


def _check_damping(damping: float, dtype: torch.dtype | None = None) -> float:
    """λ: a finite number >= 0 (and representable in ``dtype``, so ``λ·v`` cannot be NaN)."""
    top = math.inf if dtype is None else torch.finfo(dtype).max
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float))
        or not 0 <= damping < math.inf
        or damping > top
    ):
        where = "" if dtype is None else f" (at most {top:.3g} in {dtype})"
        raise ValueError(f"damping must be a finite number >= 0{where}, got {damping!r}; try 0.1")
    return float(damping)


def _floating_tensors(batch: Any) -> list[Tensor]:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)):
        return [t for b in batch for t in _floating_tensors(b)]
    return []


def check_batch(batch: Any, name: str = "batch") -> None:
    """Refuse a batch whose tensors have 0 rows or hold NaN/inf (floating tensors)."""
    for t in _floating_tensors(batch):
        if t.dim() >= 1 and t.shape[0] == 0:
            raise ValueError(
                f"{name} is empty (a tensor of shape {tuple(t.shape)}); the Fisher is an "
                "average over the batch and needs at least one row"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf (a tensor of shape {tuple(t.shape)})")


def check_dist(dist: Any, name: str = "dist") -> None:
    """A natgrad Distribution with at least one batch element."""
    if not isinstance(dist, Distribution):
        raise ValueError(
            f"{name} must be a natgrad Distribution, got {type(dist).__name__}; the model "
            "function returns one (e.g. Categorical(logits))"
        )
    if dist.batch_size == 0:
        raise ValueError(
            f"{name} has an empty batch (batch shape {tuple(dist.batch_shape)}): the batch "
            "is empty; the Fisher is an average over the batch and needs at least one row"
        )


def _index_batch(batch: Any, idx: Tensor) -> Any:
    if batch is None:
        return None
    if isinstance(batch, Tensor):
        return batch[idx]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_index_batch(b, idx) for b in batch)
    raise ValueError(f"batch must be a Tensor or a tuple of Tensors, got {type(batch).__name__}")


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_len(batch[0])
    raise ValueError(
        "subsample needs a batch (a Tensor or tuple of Tensors with a batch dimension)"
    )


def subsample_batch(
    batch: Any, subsample: float | int | None, generator: torch.Generator | None = None
) -> Any:
    """Keep a random subset of the batch's rows for cheaper products.

    ``subsample`` is a fraction in (0, 1] or a row count >= 1; ``None`` keeps all.
    """
    if subsample is None:
        return batch
    n = _batch_len(batch)
    if n == 0:
        raise ValueError("batch is empty (0 rows); there is nothing to subsample")
    if isinstance(subsample, float) and 0 < subsample <= 1:
        k = max(1, int(round(subsample * n)))
    elif isinstance(subsample, int) and not isinstance(subsample, bool) and subsample >= 1:
        k = min(subsample, n)
    else:
        raise ValueError(
            f"subsample must be a fraction in (0, 1] or a row count >= 1, got {subsample!r}"
        )
    if k == n:
        return batch
    idx = torch.randperm(n, generator=generator)[:k]
    return _index_batch(batch, idx)


class FisherOperator(ABC):
    """``v ↦ (F + λI) v`` on flat vectors, with helpers built on the product.

    Every vector argument (``v`` of :meth:`mv` and :meth:`quad`, ``delta`` of
    :meth:`kl_quadratic`, ``b`` of :meth:`solve`) must be a finite 1-d tensor of
    length :attr:`dim` and the operator's dtype: NaN or inf is refused with a
    ``ValueError`` naming the argument (never propagated into a NaN result).

    Attributes:
        dim: Length of the flat parameter vector.
        damping: λ, added to every product (``mv``, ``quad``, ``dense``, ``solve``);
            :meth:`kl_quadratic` is always undamped.
    """

    dim: int
    damping: float
    dtype: torch.dtype

    @abstractmethod
    def _mv(self, v: Tensor) -> Tensor:
        """Undamped product ``F v`` on a checked flat vector."""

    def _check(self, v: Tensor, name: str = "v") -> None:
        if not isinstance(v, Tensor) or v.dim() != 1 or v.shape[0] != self.dim:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(
                f"{name} has shape {shape}, but the Fisher acts on flat vectors of length "
                f"{self.dim}; use natgrad.params.flatten"
            )
        if v.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {v.dtype} but the parameters are {self.dtype}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or inf; the Fisher acts on finite vectors")

    def _damped(self, v: Tensor) -> Tensor:
        out = self._mv(v)
        return out.add(v, alpha=self.damping) if self.damping else out

    def mv(self, v: Tensor) -> Tensor:
        """The damped product ``(F + λI) v``."""
        self._check(v)
        return self._damped(v)

    __call__ = mv

    def quad(self, v: Tensor) -> Tensor:
        """``vᵀ (F + λI) v``."""
        return v @ self.mv(v)

    def kl_quadratic(self, delta: Tensor) -> Tensor:
        """``½ δᵀ F δ`` (undamped): the second-order estimate of ``KL(θ ‖ θ + δ)``."""
        self._check(delta, "delta")
        return 0.5 * (delta @ self._mv(delta))

    def dense(self) -> Tensor:
        """The damped matrix, built column by column from ``dim`` products (small models only)."""
        eye = torch.eye(self.dim, dtype=self.dtype)
        return torch.stack([self.mv(e) for e in eye], dim=1)

    def solve(
        self,
        b: Tensor,
        *,
        max_iter: int | None = None,
        rtol: float = 1e-10,
        atol: float = 0.0,
        x0: Tensor | None = None,
        preconditioner: MatVec | None = None,
    ) -> CGResult:
        """Solve ``(F + λI) x = b`` by conjugate gradient; see :func:`natgrad.linalg.cg`."""
        self._check(b, "b")
        return cg(
            self._damped,  # CG only multiplies finite directions (it checks them itself)
            b,
            x0=x0,
            max_iter=max_iter,
            rtol=rtol,
            atol=atol,
            preconditioner=preconditioner,
        )


class DenseFisher(FisherOperator):
    """An explicit symmetric matrix behind the operator interface.

    Raises:
        ValueError: ``matrix`` is not a finite square floating-point matrix, or
            is not symmetric to ``√ε·max|M|`` (it is then symmetrised exactly).
    """

    def __init__(self, matrix: Tensor, *, damping: float = 0.0) -> None:
        if not isinstance(matrix, Tensor) or not matrix.is_floating_point():
            got = matrix.dtype if isinstance(matrix, Tensor) else type(matrix).__name__
            raise ValueError(f"matrix must be a floating-point tensor, got {got}")
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(
                f"matrix must be square and non-empty, got shape {tuple(matrix.shape)}"
            )
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("matrix contains NaN or inf")
        scale = float(matrix.abs().max())
        tol = math.sqrt(torch.finfo(matrix.dtype).eps) * scale
        asym = float((matrix - matrix.T).abs().max())
        if asym > tol:
            raise ValueError(
                f"matrix must be symmetric (a Fisher is), but max|M - Mᵀ| = {asym:.3g} > "
                f"{tol:.3g}; pass (M + M.T) / 2 if the asymmetry is rounding"
            )
        self.matrix = 0.5 * (matrix + matrix.T)
        self.dim = matrix.shape[0]
        self.dtype = matrix.dtype
        self.damping = _check_damping(damping, matrix.dtype)

    def _mv(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def dense(self) -> Tensor:
        return self.matrix + self.damping * torch.eye(self.dim, dtype=self.dtype)


class _AutogradOperator(FisherOperator):
    """Shared set-up: private copies of the parameters that require grad.

    Operators built from ``fn`` linearise around a *copy* of the parameters, so
    they stay valid (the Fisher at θ₀) after the parameters move.  Operators
    built ``from_distribution`` share the caller's graph and become invalid
    once the parameters are changed in place (autograd then raises).
    """

    def __init__(self, params: Sequence[Tensor], damping: float) -> None:
        self.params = as_param_list(params)
        self.dim = numel(self.params)
        self.dtype = self.params[0].dtype
        self.damping = _check_damping(damping, self.dtype)

    @staticmethod
    def _leaves(params: Sequence[Tensor]) -> list[Tensor]:
        return [p.detach().clone().requires_grad_(True) for p in params]

    @staticmethod
    def _grad(outputs: Any, inputs: Sequence[Tensor], grad_outputs: Any = None) -> list[Tensor]:
        if grad_outputs is not None:
            # Contract to a scalar first: the same vector-Jacobian product, but it skips
            # torch's per-call shape checks of tensor grad_outputs (and their one-off
            # import of torch.fx's symbolic-shape machinery, ~0.3 s here).
            outputs = torch.stack(
                [(o * g).sum() for o, g in zip(outputs, grad_outputs, strict=True)]
            ).sum()
        grads = torch.autograd.grad(outputs, inputs, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]
