"""natgrad: natural-gradient optimisation and trust-region policy optimisation on PyTorch.

The core pieces:

* :mod:`natgrad.distributions` — output families with closed-form KL and output-space Fisher;
* :mod:`natgrad.fisher` — the Fisher as an operator (``mv``, ``quad``, ``dense``, ``solve``);
* :mod:`natgrad.linalg` — conjugate gradient and the KL trust-region step.
"""

from natgrad.distributions import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    Distribution,
    MultiCategorical,
)
from natgrad.fisher import (
    DenseFisher,
    EmpiricalFisher,
    FisherOperator,
    GGNFisher,
    KLHessianFisher,
    fisher_matrix,
    fisher_operator,
    kl_quadratic,
    metric_distance,
)
from natgrad.linalg import CGResult, StepInfo, cg, natural_step, solve_dense, trust_region_step
from natgrad.params import flatten, functional_model, unflatten

__version__ = "0.1.0"

__all__ = [
    "Bernoulli",
    "CGResult",
    "Categorical",
    "DenseFisher",
    "DiagGaussian",
    "Distribution",
    "EmpiricalFisher",
    "FisherOperator",
    "GGNFisher",
    "KLHessianFisher",
    "MultiCategorical",
    "StepInfo",
    "cg",
    "fisher_matrix",
    "fisher_operator",
    "flatten",
    "functional_model",
    "kl_quadratic",
    "metric_distance",
    "natural_step",
    "solve_dense",
    "trust_region_step",
    "unflatten",
]
