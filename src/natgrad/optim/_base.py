"""The interface shared by the structured Fisher approximations (K-FAC, diagonal).

A preconditioner holds a running (EMA) estimate ``F̂`` of the Fisher of a
fixed list of parameters, built by :meth:`update_factors` from one forward
pass, and applies the *damped* inverse ``(F̂ ⊕ λ)⁻¹`` directly, without CG.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Distribution
from natgrad.optim._common import resolve_damping
from natgrad.params import flatten, unflatten

Damping = float | Callable[[int], float]


class Preconditioner(ABC):
    """Common configuration, bookkeeping and flat-vector plumbing.

    Args:
        damping: λ, a float >= 0 or a schedule ``damping(step) -> float`` called
            with the number of factor updates made so far.
        decay: EMA decay ρ of the factors: ``F̂ ← ρ F̂ + (1 − ρ) F̂_batch`` (the
            first update sets ``F̂ = F̂_batch``).
        empirical: Use the observed targets (the *empirical* Fisher) instead of
            targets sampled from the model (the true Fisher).
        expectation: Compute the output-space expectation exactly instead of
            sampling (costs one backward per output dimension).
        n_samples: Sampled targets per input (true Fisher, sampled).
        seed: Seed of the private generator used for sampling (default: derived
            from ``torch.initial_seed()`` and a per-process instance count, so
            ``torch.manual_seed`` fixes it; the global generator is not drawn from).
    """

    params: list[Tensor]
    _instances = 0

    def __init__(
        self,
        *,
        damping: Damping,
        decay: float,
        empirical: bool,
        expectation: bool,
        n_samples: int,
        seed: int | None,
    ) -> None:
        if not callable(damping):
            resolve_damping(damping, 0)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}; 0.95 is usual")
        if empirical and expectation:
            raise ValueError(
                "empirical=True and expectation=True exclude each other: the expectation is "
                "over targets sampled from the model, the empirical Fisher uses data targets"
            )
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.damping: Damping = damping
        self.decay = float(decay)
        self.empirical = bool(empirical)
        self.expectation = bool(expectation)
        self.n_samples = n_samples
        if seed is None:
            # Derived from torch.manual_seed's value without drawing from the global generator.
            Preconditioner._instances += 1
            seed = (torch.initial_seed() + 1_000_003 * Preconditioner._instances) % 2**62
        self.seed = seed
        self._gen: torch.Generator | None = None
        self.steps = 0

    @property
    def mode(self) -> str:
        """``"sample"``, ``"expectation"`` or ``"empirical"``: how output cotangents are made."""
        if self.empirical:
            return "empirical"
        return "expectation" if self.expectation else "sample"

    @property
    def fisher_kind(self) -> str:
        """A readable name of the estimated matrix, used in reprs and logs."""
        if self.empirical:
            return "empirical Fisher (observed targets)"
        if self.expectation:
            return "true Fisher (exact expectation)"
        return f"true Fisher (sampled targets, {self.n_samples} per input)"

    def current_damping(self) -> float:
        """λ now: the float, or the schedule evaluated at ``self.steps``."""
        return resolve_damping(self.damping, self.steps)

    def generator(self, device: torch.device) -> torch.Generator:
        """The private sampling generator (on ``device``)."""
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        return self._gen

    def _order(self, tensors: Sequence[Tensor], params: Sequence[Tensor] | None, name: str):
        tensors = list(tensors)
        if params is None:
            if len(tensors) != len(self.params):
                raise ValueError(
                    f"{name} has {len(tensors)} tensors but the preconditioner has "
                    f"{len(self.params)} parameters; pass one per parameter, in order"
                )
            ordered = tensors
        else:
            params = self._check_params(params)
            if len(params) != len(tensors):
                raise ValueError(
                    f"{name} has {len(tensors)} tensors for {len(params)} params; pass one each"
                )
            ids = [id(p) for p in params]
            ordered = [tensors[ids.index(id(p))] for p in self.params]
        for i, (t, p) in enumerate(zip(ordered, self.params, strict=True)):
            if not isinstance(t, Tensor) or t.shape != p.shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(
                    f"{name} for parameter {i} has shape {got}, expected {tuple(p.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"{name} for parameter {i} contains NaN or inf; pass finite tensors"
                )
        return ordered

    def _check_params(self, params: Sequence[Tensor]) -> list[Tensor]:
        params = list(params)
        if sorted(id(p) for p in params) != sorted(id(p) for p in self.params):
            raise ValueError(
                f"params must list exactly the preconditioner's {len(self.params)} parameters "
                f"(in any order), got {len(params)} tensors that differ; pass the same tensors "
                "as the preconditioner's .params"
            )
        return params

    def _unorder(self, tensors: list[Tensor], params: Sequence[Tensor] | None) -> list[Tensor]:
        if params is None:
            return tensors
        pos = {id(p): i for i, p in enumerate(self.params)}
        return [tensors[pos[id(p)]] for p in params]

    @abstractmethod
    def update_factors(self, dist: Distribution, targets: Tensor | None = None) -> None:
        """Fold one batch's estimate into the running factors (see the subclass)."""

    @abstractmethod
    def _solve(self, grads: list[Tensor], damping: float) -> list[Tensor]:
        """``(F̂ ⊕ λ)⁻¹ g`` on tensors in ``self.params`` order."""

    @abstractmethod
    def _quad(self, xs: list[Tensor]) -> Tensor:
        """Undamped ``xᵀ F̂ x`` on tensors in ``self.params`` order."""

    @abstractmethod
    def dense(self) -> Tensor:
        """The undamped ``F̂`` as a matrix in flat ``self.params`` order (small models only)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically (factors, steps, generator)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""

    def _check_ready(self) -> None:
        if self.steps == 0:
            raise ValueError(
                f"{type(self).__name__} has no Fisher estimate yet; call update_factors(dist) "
                "after a forward pass first"
            )

    def solve(
        self,
        grads: Sequence[Tensor],
        params: Sequence[Tensor] | None = None,
        *,
        damping: float | None = None,
    ) -> list[Tensor]:
        """Natural gradients ``(F̂ ⊕ λ)⁻¹ g``, one tensor per parameter.

        Args:
            grads: One finite gradient per parameter, in ``self.params`` order, or
                in the order of ``params`` when given.
            params: The preconditioner's parameters in another order (all of them).
            damping: λ for this solve instead of :meth:`current_damping` (a caller
                with its own step count, e.g. :class:`~natgrad.optim.NaturalGradient`).
        """
        self._check_ready()
        ordered = self._order(grads, params, "grads")
        return self._unorder(self._solve(ordered, self._damping(damping)), params)

    def solve_quad(
        self,
        grads: Sequence[Tensor],
        params: Sequence[Tensor] | None = None,
        *,
        damping: float | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """:meth:`solve` and the undamped ``xᵀF̂x`` of its result, in one pass."""
        self._check_ready()
        ordered = self._order(grads, params, "grads")
        xs, quad = self._solve_quad(ordered, self._damping(damping))
        return self._unorder(xs, params), quad

    def _damping(self, damping: float | None) -> float:
        return self.current_damping() if damping is None else resolve_damping(damping, self.steps)

    def _solve_quad(self, grads: list[Tensor], damping: float) -> tuple[list[Tensor], Tensor]:
        xs = self._solve(grads, damping)
        return xs, self._quad(xs)

    def precondition(self, v: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """The flat-vector form of :meth:`solve`, e.g. a CG preconditioner ``r ↦ M⁻¹ r``."""
        like = self.params if params is None else self._check_params(params)
        return flatten(self.solve(unflatten(v, like, "v"), params))

    def quad(self, xs: Sequence[Tensor], params: Sequence[Tensor] | None = None) -> Tensor:
        """Undamped ``xᵀ F̂ x``; ``½ xᵀF̂x`` is the predicted KL of the step ``x``."""
        self._check_ready()
        return self._quad(self._order(xs, params, "xs"))

    def _base_state(self) -> dict[str, Any]:
        gen = None if self._gen is None else (str(self._gen.device), self._gen.get_state())
        return {"steps": self.steps, "seed": self.seed, "generator": gen}

    def _load_base_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.seed = int(state["seed"])
        self._gen = None
        if state.get("generator") is not None:
            device, gstate = state["generator"]
            self._gen = torch.Generator(device=device)
            self._gen.set_state(gstate)
