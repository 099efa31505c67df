"""Linear algebra for natural gradients: CG, a direct solve, and the KL trust-region step."""

from natgrad.linalg.cg import CGResult, cg, solve_dense
from natgrad.linalg.trust_region import (
    NaturalDirection,
    StepInfo,
    natural_direction,
    natural_step,
    trust_region_step,
)

__all__ = [
    "CGResult",
    "NaturalDirection",
    "StepInfo",
    "cg",
    "natural_direction",
    "natural_step",
    "solve_dense",
    "trust_region_step",
]
