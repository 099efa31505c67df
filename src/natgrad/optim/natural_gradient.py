"""``NaturalGradient``: a ``torch.optim.Optimizer`` that steps along ``F⁻¹∇L``.

For a loss ``L(θ)`` (usually the mean negative log-likelihood of a batch)
and the Fisher ``F`` of the model's output distribution on the same batch,
each step solves

    (F + λI) x = g,   g = ∇_θ L,

and moves ``θ ← θ − α x`` with one of two step rules:

* **fixed learning rate** (``lr=α``);
* **KL radius** (``max_kl=δ``): ``α = β = sqrt(2δ / xᵀFx)``, so that the
  predicted KL of the step, ``½ (βx)ᵀF(βx)``, equals δ; optionally capped,
  ``α = min(β, max_lr)`` (ACKTR's rule).

Exactly one of ``lr`` and ``max_kl`` is given per parameter group.

The **closure convention differs from torch's**: the closure runs the
forward pass and returns ``(loss, output)`` — or ``(loss, output, targets)``
— and does **not** call ``backward()``.  ``output`` is a natgrad
:class:`~natgrad.distributions.Distribution`, or a raw tensor with a declared
``likelihood`` (``"categorical"``: logits; ``"gaussian"``: means of a
Gaussian with fixed ``likelihood_std``).  The optimiser differentiates the
loss itself and builds the Fisher from the same forward:

==============  ==============================================================
``fisher=``     how ``x`` is found
==============  ==============================================================
``"ggn"``       CG on ``Jᵀ F_out J`` (:class:`natgrad.fisher.GGNFisher`), exact F
``"kl_hessian"``  CG on the KL Hessian (:class:`natgrad.fisher.KLHessianFisher`)
``"empirical"`` CG on the empirical Fisher at the closure's ``targets`` (not F)
``"kfac"``      directly, by K-FAC inverses (:class:`natgrad.optim.KFAC`; ``model=``)
``"diag"``      directly, by a diagonal Fisher (:class:`natgrad.optim.DiagonalFisher`)
==============  ==============================================================

**Parameter groups** each have their own ``lr``/``max_kl``/``max_lr``/
``damping``/``cg_iters``.  The Fisher is taken **block-diagonal across
groups**: each group solves with its own block and, under ``max_kl``, is scaled
to its own radius (the predicted KLs of the groups add up).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(4, 3)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> opt = NaturalGradient(net.parameters(), lr=0.5, likelihood="categorical")
    >>> def closure():
    ...     logits = net(x)
    ...     return torch.nn.functional.cross_entropy(logits, y), logits
    >>> loss = opt.step(closure)
    >>> opt.last_info.groups[0].cg_status in ("converged", "max_iter")
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.fisher import GGNFisher, KLHessianFisher
from natgrad.optim._base import Preconditioner
from natgrad.optim._common import (
    check_likelihood,
    parse_closure_result,
    reachable_leaves,
    resolve_damping,
    score_fisher,
)
from natgrad.optim._distributed import all_reduce_mean, distributed_operator, world
from natgrad.optim.diag import DiagonalFisher
from natgrad.optim.kfac import KFAC
from natgrad.optim.records import GroupStep, StepRecord
from natgrad.params import flatten, unflatten

FISHERS = ("ggn", "kl_hessian", "empirical", "kfac", "diag")


def _positive(name: str, value: Any, gi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"param_groups[{gi}]: {name} must be a finite number > 0, got {value!r}")


class NaturalGradient(torch.optim.Optimizer):
    """Natural-gradient descent with a choice of Fisher and step rule (see the module doc).

    Args:
        params: Parameters or parameter groups (dicts), as for any torch optimiser.
        lr: Fixed step size on ``F⁻¹g``.  Exactly one of ``lr`` and ``max_kl``.
        max_kl: KL radius δ of each step.
        max_lr: Optional cap on the step size under ``max_kl``.
        damping: λ >= 0, or a schedule ``damping(step) -> float``.
        cg_iters: CG iterations for ``"ggn"``, ``"kl_hessian"``, ``"empirical"``.
        cg_rtol: CG relative tolerance.
        fisher: ``"ggn"``, ``"kl_hessian"``, ``"empirical"``, ``"kfac"`` or ``"diag"``.
        likelihood: ``"categorical"`` or ``"gaussian"`` when the closure returns raw tensors.
        likelihood_std: σ of the ``"gaussian"`` likelihood.
        model: The ``nn.Module`` whose layers K-FAC hooks (``fisher="kfac"`` only).
        fisher_options: Extra keyword arguments for :class:`KFAC` or
            :class:`DiagonalFisher` (e.g. ``factor_decay``, ``inverse_every``,
            ``empirical``, ``unsupported="diag"``, ``seed``).

    Raises:
        ValueError: bad hyperparameters, parameters that do not require grad or
            (for K-FAC) are not in ``model``, or an unsupported module.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        lr: float | None = None,
        max_kl: float | None = None,
        max_lr: float | None = None,
        damping: float | Callable[[int], float] = 1e-3,
        cg_iters: int = 10,
        cg_rtol: float = 1e-10,
        fisher: str = "ggn",
        likelihood: str | None = None,
        likelihood_std: float = 1.0,
        model: nn.Module | None = None,
        fisher_options: dict[str, Any] | None = None,
    ) -> None:
        if fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        check_likelihood(likelihood, likelihood_std)
        if fisher == "kfac" and not isinstance(model, nn.Module):
            raise ValueError(
                "fisher='kfac' needs the network to hook: pass model=<your nn.Module> "
                f"(got {type(model).__name__})"
            )
        if fisher_options and fisher not in ("kfac", "diag"):
            raise ValueError(
                f"fisher_options apply to fisher='kfac' or 'diag' only, got fisher={fisher!r}"
            )
        if (
            isinstance(cg_rtol, bool)
            or not isinstance(cg_rtol, (int, float))
            or not 0 <= cg_rtol < math.inf
        ):
            raise ValueError(f"cg_rtol must be a finite number >= 0, got {cg_rtol!r}")
        self.fisher = fisher
        self.likelihood = likelihood
        self.likelihood_std = float(likelihood_std)
        self.cg_rtol = float(cg_rtol)
        self.model = model
        self.fisher_options = dict(fisher_options or {})
        self.preconditioners: list[Preconditioner | None] = []
        self.steps_taken = 0
        self.last_info: StepRecord | None = None
        self._checked = False
        defaults = dict(lr=lr, max_kl=max_kl, max_lr=max_lr, damping=damping, cg_iters=cg_iters)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated); K-FAC/diag groups get their own preconditioner."""
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        try:
            self.preconditioners.append(self._validate_group(self.param_groups[gi], gi))
        except Exception:
            self.param_groups.pop()
            raise
        self._checked = False

    def _validate_group(self, group: dict[str, Any], gi: int) -> Preconditioner | None:
        for i, p in enumerate(group["params"]):
            if not p.requires_grad:
                raise ValueError(
                    f"param_groups[{gi}]['params'][{i}] (shape {tuple(p.shape)}) does not "
                    "require grad; pass only trainable tensors"
                )
        lr, max_kl, max_lr = group["lr"], group["max_kl"], group["max_lr"]
        if (lr is None) == (max_kl is None):
            raise ValueError(
                f"param_groups[{gi}]: give exactly one of lr (fixed step on F⁻¹g) and max_kl "
                f"(KL radius per step), got lr={lr!r}, max_kl={max_kl!r}; for a capped "
                "KL-radius step use max_kl with max_lr"
            )
        if lr is not None:
            _positive("lr", lr, gi)
            if max_lr is not None:
                raise ValueError(f"param_groups[{gi}]: max_lr caps max_kl steps; drop it with lr")
        else:
            _positive("max_kl", max_kl, gi)
            if max_lr is not None:
                _positive("max_lr", max_lr, gi)
        damping = group["damping"]
        if not callable(damping):
            try:
                resolve_damping(damping, 0)
            except ValueError as err:
                raise ValueError(f"param_groups[{gi}]: {err}") from None
        iters = group["cg_iters"]
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ValueError(f"param_groups[{gi}]: cg_iters must be an int >= 1, got {iters!r}")
        try:
            if self.fisher == "kfac":
                assert self.model is not None
                return KFAC(
                    self.model, params=group["params"], damping=damping, **self.fisher_options
                )
            if self.fisher == "diag":
                return DiagonalFisher(group["params"], damping=damping, **self.fisher_options)
        except (ValueError, TypeError) as err:
            raise ValueError(f"param_groups[{gi}]: {err}") from None
        return None

    def _check_usage(self, dist: Any) -> None:
        used = reachable_leaves(list(dist.params))
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if id(p) not in used:
                    raise ValueError(
                        f"param_groups[{gi}]['params'][{i}] (shape {tuple(p.shape)}) is not used "
                        "to compute the closure's output distribution, so its Fisher is zero; "
                        "remove it from this optimiser or compute the output from it"
                    )

    def _data_parallel(self) -> bool:
        """Under torch.distributed: gradients and Fisher products are averaged over ranks."""
        if world()[1] == 1:
            return False
        if self.fisher in ("kfac", "diag"):
            raise ValueError(
                f"NaturalGradient(fisher={self.fisher!r}) runs in one process; under "
                "torch.distributed use fisher='ggn' (CG, averaged over ranks) or the drop-in "
                "KFACPreconditioner / DiagonalPreconditioner"
            )
        return True

    def step(self, closure: Callable[[], Any] | None = None) -> Tensor:  # type: ignore[override]
        """One natural-gradient step; returns the closure's loss (detached).

        Args:
            closure: Runs the forward and returns ``(loss, output[, targets])``
                without calling ``backward()``.  Required.
        """
        if closure is None:
            raise ValueError(
                "NaturalGradient.step needs a closure returning (loss, output): the Fisher is "
                "built from the output of the same forward pass"
            )
        kfacs = [p for p in self.preconditioners if isinstance(p, KFAC)]
        with torch.enable_grad():
            with contextlib.ExitStack() as stack:
                for k in kfacs:
                    stack.enter_context(k.capture())
                result = closure()
            loss, dist, targets = parse_closure_result(result, self.likelihood, self.likelihood_std)
            if not self._checked:
                self._check_usage(dist)
                self._checked = True
            if self.fisher == "empirical" and targets is None:
                raise ValueError(
                    "fisher='empirical' needs the observed targets: return "
                    "(loss, output, targets) from the closure"
                )
            flat = [p for g in self.param_groups for p in g["params"]]
            raw = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
            grads = [
                torch.zeros_like(p) if g is None else g for g, p in zip(raw, flat, strict=True)
            ]
            grads = all_reduce_mean(grads) if self._data_parallel() else grads
            plans, pos = [], 0
            for gi, group in enumerate(self.param_groups):
                n = len(group["params"])
                plans.append(self._plan(gi, group, grads[pos : pos + n], dist, targets))
                pos += n
        with torch.no_grad():
            for group, (xs, alpha, _) in zip(self.param_groups, plans, strict=True):
                if alpha:
                    torch._foreach_add_(group["params"], xs, alpha=-alpha)
        self.steps_taken += 1
        self.last_info = StepRecord(
            self.steps_taken, float(loss.detach()), self.fisher, tuple(p[2] for p in plans)
        )
        return loss.detach()

    def _plan(
        self, gi: int, group: dict[str, Any], grads: list[Tensor], dist: Any, targets: Any
    ) -> tuple[list[Tensor], float, GroupStep]:
        params = group["params"]
        # λ of this step, for every Fisher type: damping(steps_taken), used and reported.
        lam = resolve_damping(group["damping"], self.steps_taken)
        top = torch.finfo(params[0].dtype).max
        if lam > top:
            raise ValueError(
                f"param_groups[{gi}]: damping={lam!r} at step {self.steps_taken} is not "
                f"representable in {params[0].dtype} (at most {top:.3g})"
            )
        cg_info: tuple[int | None, float | None, str | None] = (None, None, None)
        prec = self.preconditioners[gi]
        if prec is not None:
            prec.damping = group["damping"]
            prec.update_factors(dist, targets)
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            return list(grads), 0.0, GroupStep(
                "lr" if group["lr"] is not None else "max_kl", 0.0, 0.0, lam, math.nan, 0.0,
                None, None, None, "non_finite",
            )  # fmt: skip
        if prec is not None:
            xs, quad = prec.solve_quad(grads, params, damping=lam)
            xfx_t = quad
        else:
            g = flatten(grads)
            if self.fisher == "ggn":
                op: Any = GGNFisher.from_distribution(dist, params, damping=lam)
            elif self.fisher == "kl_hessian":
                op = KLHessianFisher.from_distribution(dist, params, damping=lam)
            else:
                op = score_fisher(dist, targets, params, lam)
            op = distributed_operator(op)
            res = op.solve(g, max_iter=group["cg_iters"], rtol=self.cg_rtol)
            xs = unflatten(res.x, params, "x")
            xfx_t = 2.0 * op.kl_quadratic(res.x)
            cg_info = (res.iterations, res.residual_norm, res.status)
        # One read of all the scalars: ‖g‖², ‖x‖² and xᵀFx.
        sq = torch.stack(torch._foreach_norm(list(grads) + list(xs))).square()
        k = len(grads)
        gg, xx, xfx = torch.stack([sq[:k].sum(), sq[k:].sum(), xfx_t.reshape(())]).tolist()
        grad_norm, x_norm = math.sqrt(gg), math.sqrt(xx) if math.isfinite(xx) else math.nan
        status = "stepped"
        if group["lr"] is not None:
            rule, alpha = "lr", float(group["lr"])
        else:
            rule, alpha = "max_kl", 0.0
            if xfx > 0 and math.isfinite(xfx):
                alpha = math.sqrt(2.0 * group["max_kl"] / xfx)
                if group["max_lr"] is not None:
                    alpha = min(alpha, float(group["max_lr"]))
            else:
                status = "zero_curvature"
        if not (math.isfinite(x_norm) and math.isfinite(xfx)):
            alpha, status = 0.0, "non_finite"
        elif alpha and not (
            alpha * (x_norm + 1.0) < 0.5 * torch.finfo(params[0].dtype).max
            and math.isfinite(0.5 * alpha * alpha * xfx)
        ):
            alpha, status = 0.0, "non_finite"  # α·x, or its predicted KL, would overflow
        info = GroupStep(
            rule=rule,
            step_size=alpha,
            predicted_kl=0.5 * alpha * alpha * xfx if alpha else 0.0,
            damping=lam,
            grad_norm=grad_norm,
            step_norm=alpha * x_norm if alpha else 0.0,
            cg_iterations=cg_info[0],
            cg_residual=cg_info[1],
            cg_status=cg_info[2],
            status=status,
        )
        return xs, alpha, info

    def state_dict(self) -> dict[str, Any]:
        """torch's optimiser state plus natgrad's (step count, K-FAC/diag factors)."""
        state = super().state_dict()
        state["natgrad"] = {
            "fisher": self.fisher,
            "steps": self.steps_taken,
            "preconditioners": [
                None if p is None else p.state_dict() for p in self.preconditioners
            ],
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` of an optimiser with the same groups and Fisher."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("natgrad", None)
        if extra is not None:
            if extra["fisher"] != self.fisher:
                raise ValueError(
                    f"state_dict is from fisher={extra['fisher']!r}, this optimiser uses "
                    f"fisher={self.fisher!r}"
                )
            if len(extra["preconditioners"]) != len(self.preconditioners):
                raise ValueError(
                    f"state_dict has {len(extra['preconditioners'])} parameter groups, this "
                    f"optimiser has {len(self.preconditioners)}"
                )
        super().load_state_dict(state_dict)
        if extra is not None:
            for prec, saved in zip(self.preconditioners, extra["preconditioners"], strict=True):
                if prec is not None and saved is not None:
                    prec.load_state_dict(saved)
            self.steps_taken = int(extra["steps"])

    def __repr__(self) -> str:
        return f"NaturalGradient[fisher={self.fisher!r}] " + super().__repr__()
