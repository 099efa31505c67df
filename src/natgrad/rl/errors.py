"""Errors of the training path that callers may want to catch by type."""

from __future__ import annotations

__all__ = ["RolloutError"]


class RolloutError(RuntimeError):
    """The envs produced data that cannot be trained on (NaN/inf), failed, or hung, at a
    named iteration; the last good checkpoint stays intact."""
