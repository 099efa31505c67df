"""The loop shared by the drop-in preconditioners (K-FAC and diagonal).

In an ordinary training loop::

    out = model(x)                   # hooks capture the layers (see _capture)
    loss = F.cross_entropy(out, y)
    loss.backward()                  # DDP averages the gradients over ranks
    precond.step()                   # .grad ← (F̂ ⊕ λ)⁻¹ .grad, scaled by the KL clip
    optimizer.step()                 # any torch optimiser

:meth:`LayerPreconditioner.step` checks its input, sums the captured
statistics over ranks (one ``all_reduce``), skips the step if a gradient or a
statistic is not finite, folds the statistics into the factor EMAs, and
replaces every preconditioned parameter's ``.grad`` with

    ν (F̂ ⊕ λ)⁻¹ g,   ν = min(1, sqrt(κ / (η² gᵀ(F̂ ⊕ λ)⁻¹g)))

where κ is ``kl_clip`` and η the optimiser's learning rate (ν = 1 without a
clip): the KL clipping of K-FAC's distributed implementations and ACKTR
(Ba et al. 2017; Wu et al. 2017), which keeps the predicted KL of the update
``½ η² ν² gᵀ(F̂⊕λ)⁻¹g`` at or below ``κ/2``.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.optim._base import Damping
from natgrad.optim._capture import Call, Capture, distribution_builder
from natgrad.optim._common import resolve_damping
from natgrad.optim._distributed import (
    all_reduce_sum_,
    check_gradients_averaged,
    check_same_on_all_ranks,
    unwrap,
    world,
)
from natgrad.optim._kfac_block import KFACBlock
from natgrad.optim._layers import find_blocks

FISHERS = ("true", "expectation", "empirical")
_MODES = {"true": "sample", "expectation": "expectation", "empirical": "empirical"}


@dataclass(frozen=True)
class PreconditionerStep:
    """What one :meth:`LayerPreconditioner.step` did (``precond.last_info``).

    Attributes:
        step: Number of ``step()`` calls so far, this one included.
        status: ``"preconditioned"``, or ``"non_finite"``: a gradient or a
            curvature statistic was NaN/inf, so the step was skipped: every
            ``.grad`` of the model was set to ``None`` (torch optimisers then
            leave the parameters alone) and the factors were left unchanged.
        factors_updated: The factor EMAs took in this step's statistics.
        inverses_updated: K-FAC's damped inverses were recomputed.
        damping: λ used.
        kl_scale: ν, the KL clip's scale (1.0 without ``kl_clip`` or when it does not bind).
        grad_dot: ``gᵀ(F̂ ⊕ λ)⁻¹g`` over the preconditioned parameters, before ν
            (``None`` for a skipped step).
    """

    step: int
    status: str
    factors_updated: bool
    inverses_updated: bool
    damping: float
    kl_scale: float
    grad_dot: float | None


def _check_positive(name: str, value: Any, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {hint}")
    return float(value)


def _check_every(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class LayerPreconditioner(ABC):
    """Hooks, checks, data parallelism and the KL clip of a layer-wise preconditioner.

    Subclasses say what statistic a layer keeps (:meth:`_statistics`,
    :meth:`_fold`) and how it preconditions (:meth:`_prepare`, :meth:`_solve`).
    The arguments are documented on the subclasses.
    """

    _instances = 0

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: str | Callable[[Any], Distribution],
        likelihood_std: float = 1.0,
        fisher: str = "true",
        n_samples: int = 1,
        damping: Damping = 1e-3,
        factor_decay: float = 0.95,
        update_factors_every: int = 1,
        kl_clip: float | None = None,
        lr: float | Callable[[], float] | None = None,
        skip_layers: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        name = type(self).__name__
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if fisher not in FISHERS:
            raise ValueError(
                f"fisher must be one of {FISHERS} ('true': sampled targets, 'expectation': the "
                f"true Fisher computed exactly, 'empirical': observed targets), got {fisher!r}"
            )
        build = distribution_builder(likelihood, likelihood_std)
        _check_every("n_samples", n_samples)
        if n_samples != 1 and fisher != "true":
            raise ValueError(f"n_samples={n_samples} applies to fisher='true' only")
        if not callable(damping):
            resolve_damping(damping, 0)
        if (
            isinstance(factor_decay, bool)
            or not isinstance(factor_decay, (int, float))
            or not 0 <= factor_decay < 1
        ):
            raise ValueError(f"factor_decay must be in [0, 1), got {factor_decay!r}; 0.95 is usual")
        _check_every("update_factors_every", update_factors_every)
        if kl_clip is not None:
            _check_positive("kl_clip", kl_clip, "0.001 is usual, or None for no clipping")
            if lr is None:
                raise ValueError(
                    "kl_clip needs the optimiser's learning rate: pass lr=<float>, or "
                    "lr=lambda: optimizer.param_groups[0]['lr'] to follow a scheduler"
                )
        if lr is not None and not callable(lr):
            _check_positive("lr", lr, "pass the learning rate of the optimiser you step")
        if isinstance(skip_layers, str) or not all(isinstance(s, str) for s in skip_layers):
            raise ValueError(
                f"skip_layers must be a list of module paths or class names, got {skip_layers!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.model = unwrap(model)
        self.blocks: list[KFACBlock]
        self.blocks, unsupported, listed = find_blocks(self.model, tuple(skip_layers), name)
        if unsupported:
            warnings.warn(
                f"{name} leaves the gradients of {', '.join(unsupported)} unchanged (not a "
                "supported layer); list them in skip_layers=[...] to silence this",
                stacklevel=3,
            )
        self.skipped = unsupported + listed
        self.params = [p for b in self.blocks for p in b.params]
        self._all_params = list(self.model.parameters())
        mine = {id(p) for p in self.params}
        self._others = [p for p in self._all_params if id(p) not in mine]
        self.fisher = fisher
        self.likelihood = likelihood
        self.n_samples = n_samples
        self.damping: Damping = damping
        self.factor_decay = float(factor_decay)
        self.update_factors_every = update_factors_every
        self.kl_clip = None if kl_clip is None else float(kl_clip)
        self.lr = lr
        self.rank, self.world_size = world()
        if seed is None:
            LayerPreconditioner._instances += 1
            seed = (torch.initial_seed() + 1_000_003 * LayerPreconditioner._instances) % 2**62
        self.seed = seed
        self._gen: torch.Generator | None = None
        self.steps = 0
        self.factor_updates = 0
        self.skipped_steps = 0
        self.last_info: PreconditionerStep | None = None
        self._checked_ranks = False
        self.capture = Capture(
            self.model, self.blocks, build, _MODES[fisher], n_samples, self.generator
        )

    # -- what a subclass provides -------------------------------------------------------
    @abstractmethod
    def _statistics(self, calls: list[Call]) -> list[list[Tensor]]:
        """Per block, the sums (and counts, as tensors) of this step's captured calls."""

    @abstractmethod
    def _fold(self, stats: list[list[Tensor]]) -> None:
        """Fold the (all-reduced) sums into the factor EMAs."""

    @abstractmethod
    def _prepare(self, damping: float) -> bool:
        """Get ready to solve at ``damping``; True if inverses were recomputed."""

    @abstractmethod
    def _solve(self, block: int, grads: list[Tensor], damping: float) -> list[Tensor]:
        """``(F̂ ⊕ λ)⁻¹ g`` for one block's parameters."""

    @abstractmethod
    def _factor_state(self) -> list[Any]:
        """The factors of every block, for :meth:`state_dict`."""

    @abstractmethod
    def _load_factor_state(self, state: list[Any]) -> None:
        """Restore :meth:`_factor_state`."""

    # -- the step -----------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        """The private generator of sampled targets (its seed differs on every rank)."""
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed((self.seed + 7_919 * self.rank) % 2**63)
        return self._gen

    def current_damping(self) -> float:
        """λ for the next step: the float, or the schedule at ``self.steps``."""
        return resolve_damping(self.damping, self.steps)

    def current_lr(self) -> float:
        """η, the learning rate the KL clip assumes."""
        value = self.lr() if callable(self.lr) else self.lr
        return _check_positive("lr", value, "the KL clip needs the optimiser's learning rate")

    def remove_hooks(self) -> None:
        """Detach from the model; the preconditioner cannot capture afterwards."""
        self.capture.remove()

    def step(self) -> PreconditionerStep:
        """Replace the gradients of the supported layers by preconditioned ones.

        Call it after ``loss.backward()`` and before ``optimizer.step()``.

        Returns:
            The :class:`PreconditionerStep` record (also ``self.last_info``).

        Raises:
            ValueError: no gradients (``loss.backward()`` was not called, or the
                model's parameters were replaced after the preconditioner was
                made); a forward without a backward since; no captured forward
                when a factor update is due; a world size that changed since
                construction; ranks that disagree on the model.
        """
        with torch.no_grad():
            info = self._step()
        self.last_info = info
        return info

    def _check_input(self, calls: list[Call], saw_backward: bool, due: bool) -> None:
        name = type(self).__name__
        rank, size = world()
        if size != self.world_size:
            raise ValueError(
                f"this {name} was made for a world size of {self.world_size} but steps in one of "
                f"{size}; make the preconditioner after torch.distributed.init_process_group(...)"
                ", on every rank"
            )
        if all(p.grad is None for p in self.params):
            why = (
                "a forward was captured, so the model's parameters were probably replaced after "
                f"the {name} was made (a copy, or a wrapper such as FSDP that flattens them); "
                "make the preconditioner from the module whose parameters the optimiser steps"
                if calls
                else "call loss.backward() before precond.step() (on the model given to the "
                "preconditioner: if that model was copied after the preconditioner was made, "
                "make the preconditioner from the copy you train)"
            )
            raise ValueError(f"{name}.step(): no preconditioned parameter has a gradient; {why}")
        if calls and not saw_backward:
            raise ValueError(
                f"{name}.step() came after a forward pass of the model but before its "
                "backward; call loss.backward() first (the gradients present are stale)"
            )
        if due and not calls:
            raise ValueError(
                f"{name}.step(): no training forward of the model was captured since the last "
                "step, but a factor update is due. Run the forward in training mode "
                "(model.train()) with autograd on, calling the model given to the preconditioner "
                "(or its DDP wrapper); if the model was copied or wrapped after the "
                "preconditioner was made, make the preconditioner from the module you call"
            )

    def _step(self) -> PreconditionerStep:
        due = self.capture.enabled
        calls, saw_backward = self.capture.take()
        self._check_input(calls, saw_backward, due)
        stats = self._statistics(calls) if due else []
        flat = [t for s in stats for t in s]
        model_grads = [p.grad for p in self._all_params if p.grad is not None]
        if not self._checked_ranks:
            layout = [len(self.blocks), sum(t.numel() for t in flat), self.steps, int(due)]
            check_same_on_all_ranks(layout, "the preconditioned layers or the step count")
            check_gradients_averaged(model_grads, type(self).__name__)
            self._checked_ranks = True
        all_reduce_sum_(flat)
        self.steps += 1
        self.capture.enabled = self.steps % self.update_factors_every == 0
        lam = resolve_damping(self.damping, self.steps - 1)
        # Checked here: the statistics (before they reach the factors) and the gradients,
        # except, on steps without a factor update, the preconditioned ones: gᵀx below
        # is not finite when one of them is not (one check fewer on most steps).
        check = [p.grad for p in (self._all_params if due else self._others) if p.grad is not None]
        check += flat
        if check and not bool(torch.isfinite(torch.stack(torch._foreach_norm(check)).sum())):
            return self._skip(lam)
        if due:
            self._fold(stats)
            self.factor_updates += 1
        inverted = self._prepare(lam)
        gs: list[Tensor] = []
        xs: list[Tensor] = []
        for i, b in enumerate(self.blocks):
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in b.params]
            for p, x in zip(b.params, self._solve(i, grads, lam), strict=True):
                if p.grad is not None:
                    gs.append(p.grad)
                    xs.append(x)
        dot = 0.0
        if gs:
            flat_g = torch.cat([g.reshape(-1) for g in gs])
            dot = float(flat_g @ torch.cat([x.reshape(-1) for x in xs]))
        if not math.isfinite(dot):  # a gradient (or its preconditioned value) is not finite
            return self._skip(lam, inverted)
        scale = 1.0
        if self.kl_clip is not None and dot != 0:
            lr = self.current_lr()
            scale = min(1.0, math.sqrt(self.kl_clip / abs(lr * lr * dot)))
        if gs:
            torch._foreach_copy_(gs, xs)
            if scale != 1.0:
                torch._foreach_mul_(gs, scale)
        return PreconditionerStep(self.steps, "preconditioned", due, inverted, lam, scale, dot)

    def _skip(self, damping: float, inverted: bool = False) -> PreconditionerStep:
        """A non-finite step: no gradient for the optimiser, the factors as they were."""
        for param in self._all_params:
            param.grad = None
        self.skipped_steps += 1
        warnings.warn(
            f"{type(self).__name__}: a gradient or curvature statistic is not finite at step "
            f"{self.steps}; the step is skipped (every .grad set to None, factors unchanged)",
            RuntimeWarning,
            stacklevel=4,
        )
        return PreconditionerStep(self.steps, "non_finite", False, inverted, damping, 1.0, None)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Steps, the factors and the sampling generator's state."""
        gen = None if self._gen is None else (str(self._gen.device), self._gen.get_state())
        return {
            "steps": self.steps,
            "factor_updates": self.factor_updates,
            "skipped_steps": self.skipped_steps,
            "seed": self.seed,
            "generator": gen,
            "layers": [b.path for b in self.blocks],
            "factors": self._factor_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` of a preconditioner over the same layers."""
        paths = [b.path for b in self.blocks]
        if list(state["layers"]) != paths:
            raise ValueError(
                f"state_dict is for the layers {list(state['layers'])}, but this "
                f"{type(self).__name__} has {paths}"
            )
        self._load_factor_state(state["factors"])
        self.steps = int(state["steps"])
        self.factor_updates = int(state["factor_updates"])
        self.skipped_steps = int(state["skipped_steps"])
        self.seed = int(state["seed"])
        self._gen = None
        if state["generator"] is not None:
            device, gstate = state["generator"]
            self._gen = torch.Generator(device=device)
            self._gen.set_state(gstate)
        self.capture.enabled = self.steps % self.update_factors_every == 0

    @property
    def fisher_kind(self) -> str:
        """A readable name of the estimated matrix."""
        if self.fisher == "empirical":
            return "empirical Fisher (observed targets)"
        if self.fisher == "expectation":
            return "true Fisher (exact expectation)"
        return f"true Fisher (sampled targets, {self.n_samples} per input)"
