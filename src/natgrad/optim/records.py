"""The records a :class:`~natgrad.optim.NaturalGradient` step leaves in ``opt.last_info``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GroupStep", "StepRecord"]


@dataclass(frozen=True)
class GroupStep:
    """What one parameter group's step did.

    Attributes:
        rule: ``"lr"`` or ``"max_kl"``.
        step_size: α in ``θ ← θ − α x``.
        predicted_kl: ``½ α² xᵀFx`` with the undamped Fisher used (K-FAC's or the
            diagonal's for those methods).
        damping: λ used: ``damping(step)`` for a schedule, with ``step`` the number
            of steps taken before this one, for every Fisher type (K-FAC
            recomputes its inverses when λ changes).
        grad_norm: ``‖g‖``.
        step_norm: ``‖α x‖``.
        cg_iterations, cg_residual, cg_status: the CG record (``None`` for the
            direct ``"kfac"``/``"diag"`` solves).
        status: ``"stepped"``, ``"zero_curvature"`` (``xᵀFx = 0``: no step under
            ``max_kl``) or ``"non_finite"`` (no step: the gradient, ``x`` or
            ``xᵀFx`` was not finite, or ``α·x`` would overflow the parameters'
            dtype, or its predicted KL would overflow; ``grad_norm`` is NaN when
            the gradient was not finite).
    """

    rule: str
    step_size: float
    predicted_kl: float
    damping: float
    grad_norm: float
    step_norm: float
    cg_iterations: int | None
    cg_residual: float | None
    cg_status: str | None
    status: str


@dataclass(frozen=True)
class StepRecord:
    """The record of one :meth:`NaturalGradient.step` (``opt.last_info``)."""

    step: int
    loss: float
    fisher: str
    groups: tuple[GroupStep, ...]

    @property
    def predicted_kl(self) -> float:
        """Sum of the groups' predicted KLs (the Fisher is block-diagonal across groups)."""
        return sum(g.predicted_kl for g in self.groups)
