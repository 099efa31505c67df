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


def as_tensor_param(name: str, value: object) -> Tensor:
    """Check that a distribution parameter is a floating-point tensor."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value
