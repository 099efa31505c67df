"""Baseline: Adam on the reparameterised ELBO (ADVI-style), for comparison with NG-VI.

Parameters are unconstrained: the mean ``μ`` plus, for :class:`DiagGaussianQ`,
``log σ``; for :class:`FullGaussianQ`, a lower-triangular covariance factor ``C``
(``Σ = C Cᵀ``) whose diagonal is stored as ``log C_ii``. The objective is

    L(μ, C) ≈ (1/m) Σ_i log p(μ + C ε_i) + H[q],   H[q] = (d/2)(1 + log 2π) + Σ_j log C_jj,

with the same point sets as NG-VI (antithetic draws, or cubature for ``n_samples=None``,
in which case the objective is deterministic and exact for Gaussian log-joints).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from natgrad.vi.estimators import LogJoint, call_log_joint, check_n_samples, standard_points
from natgrad.vi.gaussian import DiagGaussianQ, FullGaussianQ, GaussianQ
from natgrad.vi.ngvi import Callback, VIStepInfo, _check_steps

__all__ = ["fit_adam"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_lr(lr: float, t: int | None = None) -> float:
    where = "" if t is None else f" (schedule value at step {t})"
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not float(lr) > 0.0:
        raise ValueError(f"lr must be a positive number{where}, got {lr!r}; try lr=1e-2")
    if not math.isfinite(float(lr)):
        raise ValueError(f"lr must be finite{where}, got {lr!r}")
    return float(lr)


class _Params:
    """Unconstrained parameters of either family and the map back to a ``q``."""

    def __init__(self, q0: GaussianQ) -> None:
        self.diagonal = isinstance(q0, DiagGaussianQ)
        self.loc = q0.loc.detach().clone().requires_grad_(True)
        if isinstance(q0, DiagGaussianQ):
            raw = q0.scale.detach().log()
        else:
            c = q0.scale_tril.detach()
            raw = torch.tril(c, -1) + torch.diag(c.diagonal().log())
        self.raw = raw.clone().requires_grad_(True)

    def tensors(self) -> list[Tensor]:
        return [self.loc, self.raw]

    def scale(self) -> Tensor:
        if self.diagonal:
            return self.raw.exp()
        return torch.tril(self.raw, -1) + torch.diag(self.raw.diagonal().exp())

    def log_scale_diag(self) -> Tensor:
        return self.raw if self.diagonal else self.raw.diagonal()

    def points(self, eps: Tensor) -> Tensor:
        c = self.scale()
        return self.loc + (eps * c if self.diagonal else eps @ c.mT)

    def valid(self) -> bool:
        """Whether these parameters make a proper Gaussian in the dtype: a finite mean,
        and a scale whose diagonal is positive and finite with a finite precision (a huge
        step can leave ``raw`` finite while ``exp(raw)`` over- or underflows)."""
        with torch.no_grad():
            if not bool(torch.isfinite(self.loc).all()) or not bool(torch.isfinite(self.raw).all()):
                return False
            c = self.scale()
            diag = c if self.diagonal else c.diagonal()
            return bool(
                torch.isfinite(c).all()
                and (diag > 0).all()
                and torch.isfinite(diag.square().reciprocal()).all()
            )

    def to_q(self) -> GaussianQ:
        with torch.no_grad():
            loc, c = self.loc.detach().clone(), self.scale().detach()
            if self.diagonal:
                return DiagGaussianQ(loc, c.square().reciprocal())
            return FullGaussianQ.from_scale_tril(loc, c)


def fit_adam(
    log_joint: LogJoint,
    q0: GaussianQ,
    *,
    steps: int,
    lr: float | Callable[[int], float] = 1e-2,
    n_samples: int | None = 1,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    callback: Callback | None = None,
) -> tuple[GaussianQ, list[VIStepInfo]]:
    """Maximise the reparameterised ELBO with :class:`torch.optim.Adam`.

    Args:
        log_joint: ``log p(z)``, batched over leading dims.
        q0: initial Gaussian; its family (diagonal or full) is kept.
        steps: maximum number of Adam steps (``≥ 0``).
        lr: learning rate, or a schedule ``t -> lr_t``.
        n_samples: draws per step (antithetic pairs by default), or ``None`` for the
            deterministic cubature rule.
        generator: torch generator for the draws.
        antithetic: mirror each draw.
        betas: Adam's moment decay rates.
        callback: ``callback(t, q, info)`` after each step; return ``True`` to stop.
            Building ``q`` costs a matrix inverse for the full family, so it is only
            done when a callback is given.

    Returns:
        ``(q, history)``; ``history[t].elbo`` is the objective estimate *before* step
        ``t``. A non-finite objective or gradient stops the run with ``ok=False`` and
        the last finite parameters.

    Example:
        >>> f = lambda z: -0.5 * (z - 1.0).square().sum(-1)
        >>> q0 = DiagGaussianQ(torch.zeros(1), torch.ones(1) * 4)
        >>> q, hist = fit_adam(f, q0, steps=500, lr=0.05, n_samples=None)
        >>> round(float(q.loc), 2), round(float(q.variance), 2)
        (1.0, 1.0)
    """
    _check_steps(steps)
    check_n_samples(n_samples)
    if not callable(lr):
        _check_lr(lr)
    if not isinstance(q0, DiagGaussianQ | FullGaussianQ):
        raise ValueError(f"q0 must be a DiagGaussianQ or FullGaussianQ, got {type(q0).__name__}")
    params = _Params(q0)
    opt = torch.optim.Adam(params.tensors(), lr=1.0, betas=betas)
    d = q0.dim
    history: list[VIStepInfo] = []
    top = torch.finfo(q0.dtype).max

    def representable(lr_t: float) -> float:
        if lr_t > top:
            raise ValueError(
                f"lr={lr_t!r} is larger than the largest {q0.dtype} ({top:.3g}); Adam's step "
                "cannot be represented: use a smaller lr, e.g. 1e-2"
            )
        return lr_t

    if not callable(lr):
        representable(float(lr))
    for t in range(steps):
        lr_t = representable(_check_lr(lr(t), t) if callable(lr) else float(lr))
        for group in opt.param_groups:
            group["lr"] = lr_t
        eps = standard_points(
            d, n_samples, antithetic=antithetic, generator=generator, dtype=q0.dtype,
            device=q0.device,
        )  # fmt: skip
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            f = call_log_joint(log_joint, params.points(eps))
            entropy = 0.5 * d * (1.0 + _LOG_2PI) + params.log_scale_diag().sum()
            objective = f.mean() + entropy
            (-objective).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params.tensors()]
        gnorm = float(torch.stack([g.square().sum() for g in grads]).sum().sqrt())
        value = float(objective.detach())
        if not (math.isfinite(value) and math.isfinite(gnorm)):
            history.append(VIStepInfo(value, lr_t, gnorm, math.nan, False, "non-finite ELBO "
                                      "or gradient; lower lr", eps.shape[0]))  # fmt: skip
            break
        snapshot = [p.detach().clone() for p in params.tensors()]
        opt.step()
        if not params.valid():
            with torch.no_grad():
                for p, old in zip(params.tensors(), snapshot, strict=True):
                    p.copy_(old)
            history.append(VIStepInfo(value, lr_t, gnorm, math.nan, False,
                                      "non-finite parameters after step; lower lr",
                                      eps.shape[0]))  # fmt: skip
            break
        info = VIStepInfo(value, lr_t, gnorm, math.nan, True, "", eps.shape[0])
        history.append(info)
        if callback is not None and callback(t, params.to_q(), info):
            break
    return params.to_q(), history
