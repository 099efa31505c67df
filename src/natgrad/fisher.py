"""The Fisher information matrix as an operator: which matrix, apart from how it is computed.

The Fisher of a model with output distribution ``p_θ`` on a batch of ``N``
inputs is the Hessian of the mean KL divergence with the first argument held
fixed (the seed article's ``kl_fixed``)::

    F = ∇²_θ  (1/N) Σₙ KL(p_θold(·|xₙ) ‖ p_θ(·|xₙ))  at θ = θold
      = (1/N) Σₙ Jₙᵀ F_out,ₙ Jₙ

where ``Jₙ`` is the Jacobian of the distribution's parameters with respect to
θ and ``F_out`` the distribution's own Fisher.  Every operator here has the
same interface (:class:`FisherOperator`: ``mv``, ``quad``, ``dense``,
``solve``) and differs only in how it computes the product:

* ``"ggn"`` (:class:`GGNFisher`): ``Jᵀ F_out J v``.  By default the model is
  *linearised once* (one forward, one backward with ``create_graph``) and each
  product is then two cheap backward passes: ``J v`` by the transpose trick
  (the derivative of ``Jᵀu`` with respect to ``u``) and ``Jᵀ w``.  With
  ``linearize=False`` each product is one ``torch.func.jvp`` and one vjp.
* ``"kl_hessian"`` (:class:`KLHessianFisher`): the seed's recipe, the gradient
  of ``(∇KL)·v`` by double backprop.  The reference, and the way for models
  whose output family has no closed-form Fisher.
* ``"empirical"`` (:class:`EmpiricalFisher`): the mean outer product of the
  scores at *observed* targets.  It is not the Fisher; it is named so that
  nobody mistakes it for one.
* :class:`DenseFisher`: an explicit matrix (the seed's ``fisher_matrix``).

The model is a function ``fn(params, batch) -> Distribution`` of an explicit
list of parameter tensors (see :func:`natgrad.params.functional_model`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.linalg.cg import CGResult, MatVec, cg
from natgrad.params import as_param_list, flatten, numel, unflatten

ModelFn = Callable[[Sequence[Tensor], Any], Distribution]
METHODS = ("ggn", "kl_hessian", "empirical")


def _check_damping(damping: float) -> float:
    if not isinstance(damping, (int, float)) or not damping >= 0 or damping == float("inf"):
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}; try 0.1")
    return float(damping)


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

    def mv(self, v: Tensor) -> Tensor:
        """The damped product ``(F + λI) v``."""
        self._check(v)
        out = self._mv(v)
        return out.add(v, alpha=self.damping) if self.damping else out

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
            self.mv,
            b,
            x0=x0,
            max_iter=max_iter,
            rtol=rtol,
            atol=atol,
            preconditioner=preconditioner,
        )


class DenseFisher(FisherOperator):
    """An explicit symmetric matrix behind the operator interface."""

    def __init__(self, matrix: Tensor, *, damping: float = 0.0) -> None:
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype = matrix.dtype
        self.damping = _check_damping(damping)

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
        self.damping = _check_damping(damping)

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


class GGNFisher(_AutogradOperator):
    """The exact Fisher as ``Jᵀ F_out J v`` (a generalised Gauss-Newton product).

    Args:
        fn: ``fn(params, batch) -> Distribution``, a function of the listed tensors.
        params: The parameters, in the order of the flat vector.
        batch: Inputs passed to ``fn`` (a Tensor, a tuple of Tensors, or None).
        damping: λ in ``F + λI``.
        subsample: Use a random fraction (or count) of the batch rows.
        generator: Random source for ``subsample``.
        linearize: Linearise once and reuse it for every product (default), or
            recompute with one ``torch.func.jvp`` and a stored vjp per product.
    """

    def __init__(
        self,
        fn: ModelFn,
        params: Sequence[Tensor],
        batch: Any = None,
        *,
        damping: float = 0.0,
        subsample: float | int | None = None,
        generator: torch.Generator | None = None,
        linearize: bool = True,
    ) -> None:
        super().__init__(params, damping)
        batch = subsample_batch(batch, subsample, generator)
        self.linearize = linearize
        if linearize:
            leaves = self._leaves(self.params)
            with torch.enable_grad():
                dist = fn(leaves, batch)
            self._setup_linearized(dist, leaves)
        else:
            primals = tuple(p.detach() for p in self.params)
            holder: list[Distribution] = []

            def outputs(*values: Tensor) -> tuple[Tensor, ...]:
                d = fn(values, batch)
                holder.append(d)
                return d.params

            out, self._vjp_fn = torch.func.vjp(outputs, *primals)  # type: ignore[misc]
            self._jvp_fn = outputs
            self._primals = primals
            self.dist = holder[0].with_params([o.detach() for o in out])

    @classmethod
    def from_distribution(
        cls, dist: Distribution, params: Sequence[Tensor], *, damping: float = 0.0
    ) -> GGNFisher:
        """Linearise around a forward pass you already made (it shares its graph).

        ``dist`` must have been computed from ``params`` with autograd on, e.g. the
        forward of TRPO's surrogate loss; no second forward is made.
        """
        self = cls.__new__(cls)
        _AutogradOperator.__init__(self, params, damping)
        self.linearize = True
        if not any(p.requires_grad for p in dist.params):
            raise ValueError(
                "dist was computed without autograd (its parameters do not require grad); "
                "compute it from params outside torch.no_grad()"
            )
        self._setup_linearized(dist, self.params)
        return self

    def _setup_linearized(self, dist: Distribution, leaves: Sequence[Tensor]) -> None:
        self.dist = dist.detach()
        self._outputs = dist.params
        self._leaves_ = list(leaves)
        # Jᵀu is linear in u; differentiating it with respect to u gives J v.
        self._dummies = [torch.zeros_like(o, requires_grad=True) for o in self._outputs]
        with torch.enable_grad():
            contracted = torch.stack(
                [(o * d).sum() for o, d in zip(self._outputs, self._dummies, strict=True)]
            ).sum()
            vjp = torch.autograd.grad(
                contracted, self._leaves_, create_graph=True, allow_unused=True
            )
        self._lin_idx = [i for i, g in enumerate(vjp) if g is not None and g.requires_grad]
        self._lin_grads = [vjp[i] for i in self._lin_idx]

    def jvp(self, vs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``J v``: the change of the distribution's parameters along ``v``."""
        if not self.linearize:
            _, tangents = torch.func.jvp(self._jvp_fn, self._primals, tuple(vs))  # type: ignore[misc]
            return tuple(tangents)
        if not self._lin_idx:
            return tuple(torch.zeros_like(o) for o in self._outputs)
        return tuple(self._grad(self._lin_grads, self._dummies, [vs[i] for i in self._lin_idx]))

    def vjp(self, ws: Sequence[Tensor]) -> list[Tensor]:
        """``Jᵀ w``: pull an output-space cotangent back to the parameters."""
        if not self.linearize:
            return list(self._vjp_fn(tuple(ws)))
        return self._grad(self._outputs, self._leaves_, list(ws))

    def _mv(self, v: Tensor) -> Tensor:
        tangents = self.jvp(unflatten(v, self.params, "v"))
        scale = 1.0 / self.dist.batch_size
        cot = [t * scale for t in self.dist.fisher_mv(tangents)]
        return flatten(self.vjp(cot))


class KLHessianFisher(_AutogradOperator):
    """The seed's Fisher: the Hessian of ``mean KL(stop_grad(p) ‖ p)`` by double backprop.

    Same arguments as :class:`GGNFisher` (less ``linearize``).  Each product is
    the gradient of ``(∇KL)·v``, about twice a gradient in cost; it is the
    reference that the GGN product is tested against.
    """

    def __init__(
        self,
        fn: ModelFn,
        params: Sequence[Tensor],
        batch: Any = None,
        *,
        damping: float = 0.0,
        subsample: float | int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(params, damping)
        leaves = self._leaves(self.params)
        with torch.enable_grad():
            dist = fn(leaves, subsample_batch(batch, subsample, generator))
        self._setup(dist, leaves)

    @classmethod
    def from_distribution(
        cls, dist: Distribution, params: Sequence[Tensor], *, damping: float = 0.0
    ) -> KLHessianFisher:
        """Build from a forward you already made (as sb3-contrib's TRPO does)."""
        self = cls.__new__(cls)
        _AutogradOperator.__init__(self, params, damping)
        self._setup(dist, self.params)
        return self

    def _setup(self, dist: Distribution, leaves: Sequence[Tensor]) -> None:
        self._leaves_ = list(leaves)
        with torch.enable_grad():
            kl = dist.detach().kl(dist).mean()  # the seed's kl_fixed
            grads = torch.autograd.grad(kl, self._leaves_, create_graph=True, allow_unused=True)
        self._kl_grad = flatten(
            [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]
        )

    def _mv(self, v: Tensor) -> Tensor:
        if not self._kl_grad.requires_grad:
            return torch.zeros_like(v)
        return flatten(self._grad(self._kl_grad @ v, self._leaves_))


class EmpiricalFisher(_AutogradOperator):
    """The *empirical* Fisher ``(1/N) Σₙ ∇log p(yₙ|xₙ) ∇log p(yₙ|xₙ)ᵀ`` at observed targets.

    This is not the Fisher information: it uses data targets instead of
    samples from the model, and it differs from the Fisher away from a
    perfect fit.  It is offered because some methods use it, under a name that
    says what it is.  Per-sample scores are computed with ``torch.func.vmap``.

    Args:
        fn, params, batch, damping: as :class:`GGNFisher`.
        targets: Observed values ``yₙ`` with the batch as first dimension.
    """

    def __init__(
        self,
        fn: ModelFn,
        params: Sequence[Tensor],
        batch: Any,
        targets: Tensor,
        *,
        damping: float = 0.0,
    ) -> None:
        super().__init__(params, damping)
        if not isinstance(targets, Tensor):
            raise ValueError(f"targets must be a Tensor, got {type(targets).__name__}")
        primals = tuple(p.detach() for p in self.params)

        def log_lik(values: tuple[Tensor, ...], x: Any, y: Tensor) -> Tensor:
            x1 = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), x)
            return fn(values, x1).log_prob(y.unsqueeze(0)).sum()

        per_sample = torch.func.vmap(torch.func.grad(log_lik), in_dims=(None, 0, 0))
        scores = per_sample(primals, batch, targets)
        self.scores = torch.cat([s.reshape(s.shape[0], -1) for s in scores], dim=1)

    def _mv(self, v: Tensor) -> Tensor:
        return self.scores.T @ (self.scores @ v) / self.scores.shape[0]

    def dense(self) -> Tensor:
        m = self.scores.T @ self.scores / self.scores.shape[0]
        return m + self.damping * torch.eye(self.dim, dtype=self.dtype)


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

    >>> metric_distance(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
    tensor(18.)
    """
    if delta.dim() != 1 or metric.shape != (delta.shape[0], delta.shape[0]):
        raise ValueError(
            f"delta must be a vector of length n and metric n x n, got shapes "
            f"{tuple(delta.shape)} and {tuple(metric.shape)}"
        )
    return delta @ metric @ delta


def kl_quadratic(fisher: FisherOperator | Tensor, delta: Tensor) -> Tensor:
    """``½ δᵀ F δ``: the second-order estimate of ``KL(p_θ ‖ p_{θ+δ})`` (undamped)."""
    if isinstance(fisher, Tensor):
        return 0.5 * metric_distance(delta, fisher)
    return fisher.kl_quadratic(delta)
