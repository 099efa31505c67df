"""Output distributions, each with a closed-form KL and its output-space Fisher."""

from natgrad.distributions.base import Distribution, NonFiniteError
from natgrad.distributions.bernoulli import Bernoulli
from natgrad.distributions.categorical import Categorical, MultiCategorical
from natgrad.distributions.gaussian import DiagGaussian
from natgrad.distributions.sde import StateDependentGaussian

__all__ = [
    "Bernoulli",
    "Categorical",
    "DiagGaussian",
    "Distribution",
    "MultiCategorical",
    "NonFiniteError",
    "StateDependentGaussian",
]
