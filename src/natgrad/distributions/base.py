"""The distribution interface shared by every output family.

A natgrad distribution is a batch of independent distributions whose
parameters are tensors produced by a model.  Besides the usual ``sample``,
``log_prob``, ``entropy`` and ``kl``, each family knows the Fisher
information of *its own parameters* (the "output-space Fisher"), so that the
Fisher of a whole network can be multiplied by a vector as ``Jᵀ F_out J v``
without ever forming it (see :mod:`natgrad.fisher`).

Conventions:
    * ``batch_shape`` is every leading dimension; the last dimension is the
      event (action) dimension for the families that have one, and
      ``log_prob``, ``entropy`` and ``kl`` are summed over it, as in the seed
      article's ``gauss_KL``.
    * ``kl(other)`` is ``KL(self ‖ other)`` per batch element.
    * ``fisher_mv(tangents)`` returns ``F_out · tangents`` per batch element,
      *not* averaged: callers average over the batch.

Bad input is refused where it enters: a parameter holding NaN (or an
infinity the family cannot represent) raises :class:`NonFiniteError`, a
``ValueError`` naming the tensor, at construction; a ``value`` outside the
support raises ``ValueError`` in ``log_prob``.  Value checks are skipped only
inside ``torch.func.vmap``, where tensors hold no concrete values (shapes are
still checked); callers that vmap check their inputs first, as
:class:`~natgrad.fisher.EmpiricalFisher` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor


class Distribution(ABC):
    """A batch of distributions parameterised by output tensors of a model."""

    @property
    @abstractmethod
    def params(self) -> tuple[Tensor, ...]:
        """The output-space coordinates in which ``fisher_mv`` is expressed."""

    @abstractmethod
    def with_params(self, params: Sequence[Tensor]) -> Distribution:
        """A distribution of the same family (and static structure) with new params."""

    @property
    @abstractmethod
    def batch_shape(self) -> torch.Size:
        """Leading dimensions indexing independent distributions."""

    @abstractmethod
    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw one sample per batch element, without gradient."""

    @abstractmethod
    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density (or log-mass) of ``value``, shape ``batch_shape``."""

    @abstractmethod
    def entropy(self) -> Tensor:
        """Entropy per batch element, shape ``batch_shape``."""

    @abstractmethod
    def mode(self) -> Tensor:
        """The most likely value (the mean for a Gaussian)."""

    @abstractmethod
    def kl(self, other: Distribution) -> Tensor:
        """Closed-form ``KL(self ‖ other)`` per batch element."""

    @abstractmethod
    def fisher_mv(self, tangents: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Multiply each batch element's output-space Fisher by ``tangents``."""

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample; only families with a reparameterisation have one."""
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sample")

    def detach(self) -> Distribution:
        """A frozen copy: parameters cut from the graph (``stop_gradient``) and cloned.

        The clone matters: a parameter such as a state-independent ``log_std``
        may be a view of a live ``nn.Parameter``, and the "old" policy of a
        trust-region step must not move when the parameters do.
        """
        return self.with_params([p.detach().clone() for p in self.params])

    @property
    def batch_size(self) -> int:
        """Number of independent distributions (the product of ``batch_shape``)."""
        return int(self.batch_shape.numel())

    def __getitem__(self, index: object) -> Distribution:
        return self.with_params([p[index] for p in self.params])  # type: ignore[index]

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(p.shape)) for p in self.params)
        return f"{type(self).__name__}(params with shapes {shapes})"


def check_same_family(a: Distribution, b: Distribution) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` can be compared by ``kl``."""
    if type(a) is not type(b):
        raise ValueError(
            f"kl(other): other is a {type(b).__name__}, but self is a {type(a).__name__}; "
            "closed-form KL needs two distributions of the same family"
        )
    for i, (p, q) in enumerate(zip(a.params, b.params, strict=True)):
        if p.shape != q.shape:
            raise ValueError(
                f"kl(other): parameter {i} has shape {tuple(q.shape)} in other but "
                f"{tuple(p.shape)} in self; both must describe the same batch"
            )


class NonFiniteError(ValueError):
    """A distribution parameter holds NaN or an infinity its family cannot represent.

    A ``ValueError`` whose message names the tensor.  The trust-region line
    search catches exactly this class at a trial point (a trial whose outputs
    are not finite is rejected as ``"non_finite"``, and the search goes on).
    """


def holds(cond: Tensor) -> bool:
    """``bool(cond.all())``, or True where values are not concrete.

    Inside ``torch.func.vmap`` or a tracing transform (``torch.func.linearize``,
    ``make_fx``) a tensor has no value to branch on; the check is then skipped.
    """
    try:
        return bool(cond.all())
    except RuntimeError as err:  # "... data-dependent control flow ..." from vmap or make_fx
        if "data-dependent" in str(err):
            return True
        raise


def as_tensor_param(name: str, value: object) -> Tensor:
    """Check that a distribution parameter is a floating-point tensor."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_finite(name: str, t: Tensor, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``name`` unless every entry of ``t`` is finite."""
    if not holds(torch.isfinite(t.detach())):
        raise NonFiniteError(
            f"{name} contains NaN or inf; a distribution needs finite parameters{hint}"
        )


def check_value_shape(name: str, value: Tensor, event: torch.Size, batch: torch.Size) -> None:
    """``value`` must be a tensor whose shape broadcasts to ``batch + event`` (the event kept)."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    shape = tuple(value.shape)
    n = len(event)
    if len(shape) < n or shape[len(shape) - n :] != tuple(event):
        raise ValueError(
            f"{name} has shape {shape}, but the distribution's events have shape "
            f"{tuple(event)} (batch shape {tuple(batch)}); pass one value per batch element"
        )
    try:
        torch.broadcast_shapes(torch.Size(shape[: len(shape) - n]), batch)
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {shape}, which does not broadcast to the batch shape "
            f"{tuple(batch)} with events {tuple(event)}"
        ) from None


def check_tangents(dist: Distribution, tangents: Sequence[Tensor]) -> list[Tensor]:
    """``fisher_mv``'s argument: one finite tensor per parameter, shaped like it."""
    tangents = list(tangents)
    params = dist.params
    if len(tangents) != len(params):
        raise ValueError(
            f"tangents has {len(tangents)} tensors but {type(dist).__name__} has "
            f"{len(params)} parameters; pass one tangent per parameter"
        )
    for i, (t, p) in enumerate(zip(tangents, params, strict=True)):
        if not isinstance(t, Tensor) or t.shape != p.shape:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"tangents[{i}] has shape {shape}, but parameter {i} has shape {tuple(p.shape)}"
            )
        if not holds(torch.isfinite(t.detach())):
            raise ValueError(f"tangents[{i}] contains NaN or inf; the tangents must be finite")
    return tangents
