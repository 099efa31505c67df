"""Natural-gradient optimisers beyond RL: a torch optimiser and structured Fishers.

* :class:`NaturalGradient` — a ``torch.optim.Optimizer`` stepping along
  ``(F + λI)⁻¹∇L`` with the exact Fisher (CG on the GGN, KL Hessian or
  empirical Fisher) or a structured one (K-FAC, diagonal), with a fixed
  learning rate or a KL radius per step.
* :class:`KFAC` — Kronecker-factored Fisher of ``nn.Linear``/``nn.Conv2d``
  layers, usable on its own as a direct solve or a CG preconditioner.
* :class:`DiagonalFisher` — an EMA of the Fisher's diagonal.
* :class:`KFACPreconditioner`, :class:`DiagonalPreconditioner` — the same
  Fishers as drop-in preconditioners for an ordinary loop
  (``loss.backward(); precond.step(); optimizer.step()``), data-parallel
  under ``torch.distributed``.

See ``docs/optim.md`` for usage and benchmark figures.
"""

from natgrad.optim._layer_preconditioner import PreconditionerStep
from natgrad.optim.diag import DiagonalFisher
from natgrad.optim.diag_preconditioner import DiagonalPreconditioner
from natgrad.optim.kfac import KFAC, KFACFactorError
from natgrad.optim.kfac_preconditioner import KFACPreconditioner
from natgrad.optim.natural_gradient import NaturalGradient
from natgrad.optim.records import GroupStep, StepRecord

__all__ = [
    "KFAC",
    "DiagonalFisher",
    "DiagonalPreconditioner",
    "GroupStep",
    "KFACFactorError",
    "KFACPreconditioner",
    "NaturalGradient",
    "PreconditionerStep",
    "StepRecord",
]
