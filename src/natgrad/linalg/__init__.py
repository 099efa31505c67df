"""Linear algebra for natural gradients: CG, a direct solve, and the KL trust-region step."""

from natgrad.linalg.cg import CGResult, cg, solve_dense
from natgrad.linalg.trust_region import (
    NaturalDirection,
    StepInfo,
    line_search,
    natural_direction,
    natural_step,
    scaled_direction,
    trust_region_step,
)

__all__ = [
    "CGResult",
    "NaturalDirection",
    "StepInfo",
    "cg",
    "line_search",
    "natural_direction",
    "natural_step",
    "scaled_direction",
    "solve_dense",
    "trust_region_step",
]
