"""``KFACPreconditioner``: K-FAC that drops into an ordinary training loop.

The loop is the user's own, as with kfac-pytorch's preconditioner::

    precond = KFACPreconditioner(model, likelihood="categorical", lr=0.1, kl_clip=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        precond.step()        # .grad ← ν (F̂ ⊕ λ)⁻¹ .grad, layer by layer
        opt.step()

Each supported layer (``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d`` with
``groups=1``, ``nn.Embedding``) gets a Kronecker-factored Fisher block
``G ⊗ A`` (:mod:`natgrad.optim._kfac_block`, :mod:`natgrad.optim._layers`):
``A = E[ã ãᵀ]`` over its inputs and ``G = E[g gᵀ]`` over the gradients of a
log-likelihood at its outputs, kept as EMAs with decay ``factor_decay`` and
inverted with π-corrected Tikhonov damping every ``inv_update_every`` steps.
Other modules with parameters (``nn.LayerNorm``, ``nn.BatchNorm*``, …) keep
their plain gradients; one warning lists them.

**Which Fisher** (``fisher=``): ``"true"`` (default) samples targets
``ŷ ~ p(·|x)`` from the model's output in the forward pass and
backpropagates their log-likelihood to the layer outputs (about half a
backward pass more per factor update); ``"expectation"`` takes the exact
expectation over the output distribution (one such backward per output
dimension); ``"empirical"`` uses the gradients of the user's own loss at the
layer outputs, which must be the mean negative log-likelihood of the
observed targets (``F.cross_entropy`` with its default mean reduction): the
empirical Fisher, which is not the Fisher away from a perfect fit, and what
kfac-pytorch computes by default.

Under ``torch.distributed`` (DDP) the factor statistics are summed over
ranks before the EMA, so the step on N ranks with N equal shards is the
single-process step on the whole batch (see ``docs/distributed.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.optim._base import Damping
from natgrad.optim._capture import Call
from natgrad.optim._distributed import invert_on_owners, world
from natgrad.optim._kfac_block import KFACBlock
from natgrad.optim._layer_preconditioner import LayerPreconditioner, _check_every
from natgrad.optim._layers import EmbeddingBlock

__all__ = ["KFACPreconditioner"]


def _ema(old: Tensor | None, total: Tensor, scale: float, decay: float) -> Tensor:
    """``ρ·old + (1 − ρ)·scale·total`` in place (``scale·total`` the first time)."""
    if old is None:
        return total.mul_(scale)
    return old.mul_(decay).add_(total, alpha=(1.0 - decay) * scale)


def _input_moments(block: KFACBlock, xs: list[Tensor]) -> tuple[Tensor, int]:
    """``Σ ã ãᵀ`` and the row count, the bias's row and column from sums (no padded copy)."""
    a = block.input_rows(xs, bias_column=False)
    if not block.has_bias:
        return a.T @ a, a.shape[0]
    if a.numel() <= 2**16:  # small: one padded copy and one product are the fewest ops
        a = F.pad(a, (0, 1), value=1.0)
        return a.T @ a, a.shape[0]
    k = a.shape[1]
    out = a.new_empty(k + 1, k + 1)
    if k:
        torch.matmul(a.T, a, out=out[:k, :k])
    s = a.sum(0)
    out[:k, k], out[k, :k], out[k, k] = s, s, a.shape[0]
    return out, a.shape[0]


class KFACPreconditioner(LayerPreconditioner):
    """K-FAC preconditioning of ``.grad`` in place, for any torch optimiser.

    Args:
        model: The network (or its ``DistributedDataParallel`` wrapper); hooks are
            registered on it and on its supported layers.
        likelihood: What the model's output is: ``"categorical"`` (logits, for
            cross-entropy), ``"gaussian"`` (means of a Gaussian with standard
            deviation ``likelihood_std``, for a squared error), or a callable
            ``output -> natgrad Distribution``.
        likelihood_std: σ of the ``"gaussian"`` likelihood.
        fisher: ``"true"`` (sampled targets, default), ``"expectation"`` or
            ``"empirical"`` (see the module docstring).
        n_samples: Sampled targets per output for ``fisher="true"``.
        damping: λ, a float >= 0 or a schedule ``damping(step) -> float`` (``step``
            = steps taken before this one).
        factor_decay: EMA decay ρ of ``A`` and ``G`` (the first update sets them).
        update_factors_every: Capture the forward and update the factors every
            this many steps (kfac-pytorch's ``factor_update_steps``).
        inv_update_every: Recompute the damped inverses every this many steps
            (kfac-pytorch's ``inv_update_steps``), and when a float damping changes.
        kl_clip: κ: scale the preconditioned gradient by
            ``ν = min(1, sqrt(κ / (lr² gᵀ(F̂⊕λ)⁻¹g)))``; None (default) for no clipping.
        lr: The optimiser's learning rate (float, or a callable returning it) for the clip.
        skip_layers: Module paths or class names to leave unpreconditioned.
        distribute_inverses: Under ``torch.distributed``, each rank inverts only
            the layers assigned to it and the inverses are summed over ranks
            (KAISA's idea, Pauloski et al. 2021); see :func:`invert_on_owners`.
        seed: Seed of the private generator of sampled targets (offset by the rank).

    Raises:
        ValueError: an option out of range, a parameter shared by two layers, or
            no supported layer (the message lists the supported types).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        likelihood: str | Callable[[Any], Distribution],
        likelihood_std: float = 1.0,
        fisher: str = "true",
        n_samples: int = 1,
        damping: Damping = 1e-3,
        factor_decay: float = 0.95,
        update_factors_every: int = 1,
        inv_update_every: int = 10,
        kl_clip: float | None = None,
        lr: float | Callable[[], float] | None = None,
        skip_layers: Sequence[str] = (),
        distribute_inverses: bool = False,
        seed: int | None = None,
    ) -> None:
        _check_every("inv_update_every", inv_update_every)
        if not isinstance(distribute_inverses, bool):
            raise ValueError(
                f"distribute_inverses must be True or False, got {distribute_inverses!r}"
            )
        super().__init__(
            model,
            likelihood=likelihood,
            likelihood_std=likelihood_std,
            fisher=fisher,
            n_samples=n_samples,
            damping=damping,
            factor_decay=factor_decay,
            update_factors_every=update_factors_every,
            kl_clip=kl_clip,
            lr=lr,
            skip_layers=skip_layers,
            seed=seed,
        )
        self.inv_update_every = inv_update_every
        self.distribute_inverses = distribute_inverses
        self.inverse_damping: float | None = None

    def _statistics(self, calls: list[Call]) -> list[list[Tensor]]:
        out = []
        for i, b in enumerate(self.blocks):
            mine = [c for c in calls if c.block == i and c.gs]
            if not mine:
                raise ValueError(
                    f"KFACPreconditioner: layer {b!r} was not called (with autograd on) in the "
                    "forward pass(es) captured since the last step, or no gradient reached it. "
                    "Was it replaced or wrapped after the preconditioner was made, or called "
                    "through its weight? Pass skip_layers=[...] to leave it out"
                )
            ref = mine[0].gs[0]
            g_rows = []
            if isinstance(b, EmbeddingBlock):
                a_sum = torch.zeros(b.vocab, dtype=ref.dtype, device=ref.device)
                rows = 0
                for c in mine:
                    t, keep = b.tokens(c.x)
                    a_sum += torch.bincount(t[keep], minlength=b.vocab).to(ref.dtype)
                    rows += int(keep.sum())
                    g_rows += [b.output_rows(g)[keep] for g in c.gs]
            else:
                a_sum, rows = _input_moments(b, [c.x for c in mine])
                g_rows = [b.output_rows(g) for c in mine for g in c.gs]
            gr = g_rows[0] if len(g_rows) == 1 else torch.cat(g_rows)
            g_sum = gr.T @ gr
            n = sum({c.forward: c.n for c in mine}.values())
            counts = torch.tensor([rows, n], dtype=ref.dtype, device=ref.device)
            out.append([a_sum, g_sum, counts])
        return out

    def _fold(self, stats: list[list[Tensor]]) -> None:
        for b, (a_sum, g_sum, counts) in zip(self.blocks, stats, strict=True):
            rows, n = counts.tolist()
            b.A = _ema(b.A, a_sum, 1.0 / max(rows, 1.0), self.factor_decay)
            b.G = _ema(b.G, g_sum, 1.0 / n, self.factor_decay)

    def _prepare(self, damping: float) -> bool:
        due = (self.steps - 1) % self.inv_update_every == 0
        changed = not callable(self.damping) and damping != self.inverse_damping
        if not (due or changed or any(b.A_inv is None for b in self.blocks)):
            return False
        if self.distribute_inverses and world()[1] > 1:
            invert_on_owners(self.blocks, damping)
        else:
            for b in self.blocks:
                b.invert(damping)
        self.inverse_damping = damping
        return True

    def _solve(self, block: int, grads: list[Tensor], damping: float) -> list[Tensor]:
        return self.blocks[block].solve(grads)

    def _factor_state(self) -> list[Any]:
        clone = lambda t: None if t is None else t.clone()  # noqa: E731
        return [
            {"A": clone(b.A), "G": clone(b.G), "A_inv": clone(b.A_inv), "G_inv": clone(b.G_inv)}
            for b in self.blocks
        ] + [self.inverse_damping]

    def _load_factor_state(self, state: list[Any]) -> None:
        *blocks, self.inverse_damping = state
        ref = self.params[0]
        for b, s in zip(self.blocks, blocks, strict=True):
            for key in ("A", "G", "A_inv", "G_inv"):
                t = s[key]
                setattr(b, key, None if t is None else t.detach().clone().to(ref))

    def dense(self) -> Tensor:
        """The undamped block-diagonal ``F̂`` over ``self.params`` (flat order; small models)."""
        if any(b.A is None for b in self.blocks):
            raise ValueError("KFACPreconditioner has no factors yet; take a step first")
        return torch.block_diag(*[b.dense() for b in self.blocks])

    def __repr__(self) -> str:
        layers = ", ".join(repr(b) for b in self.blocks)
        skipped = f"; unpreconditioned [{', '.join(self.skipped)}]" if self.skipped else ""
        return (
            f"KFACPreconditioner({self.fisher_kind}; layers [{layers}]{skipped}; "
            f"damping={self.damping!r}, factor_decay={self.factor_decay}, "
            f"update_factors_every={self.update_factors_every}, "
            f"inv_update_every={self.inv_update_every}, kl_clip={self.kl_clip}, "
            f"steps={self.steps})"
        )
