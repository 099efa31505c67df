"""A training run's budget, seed and I/O cadence (what ``natgrad train`` reads).

>>> RunConfig(total_steps=10_000).checkpoint_every
10
"""

from __future__ import annotations

from dataclasses import dataclass

from natgrad.rl.config.base import ConfigBase, _bad, _positive_int

__all__ = ["RunConfig"]


@dataclass
class RunConfig(ConfigBase):
    """What to run and how often to save, evaluate and log it."""

    total_steps: int = 100_000
    """Environment steps to train for, all envs together."""
    seed: int = 0
    """Seed of the envs, the action noise, the network initialisation and minibatch order."""
    checkpoint_every: int = 10
    """Write the run's checkpoint every this many iterations (and always at the end)."""
    eval_every: int = 0
    """Evaluate deterministically every this many iterations (evaluations.csv, best
    model); 0 evaluates only at the end."""
    eval_episodes: int = 10
    """Episodes of each deterministic evaluation (0: none at the end)."""
    tensorboard: bool | None = None
    """Write TensorBoard event files next to progress.csv: True (an error if the
    tensorboard package is missing), False, or None (when it is installed)."""

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "total_steps", "checkpoint_every")
        for name in ("seed", "eval_every", "eval_episodes"):
            if getattr(self, name) < 0:
                _bad(name, getattr(self, name), "an int >= 0")
