"""Hooks that turn an ordinary training forward into per-layer Fisher statistics.

A layer-wise preconditioner needs, for every supported layer, its inputs
``a`` and the gradients ``g`` of a log-likelihood at its outputs.  In a plain
loop (``out = model(x); loss.backward(); precond.step()``) they are collected
by forward hooks:

* a **forward pre-hook on the model** opens a capture when the model is in
  training mode, autograd is on, and a factor update is due;
* a **forward hook on each layer** records its input and output;
* a **forward hook on the model** closes the capture.  For the *true*
  Fisher it reads the model's output as a distribution ``p(y|x)``, draws
  targets ``ŷ ~ p`` (or takes the exact expectation) and backpropagates
  ``Σ log p(ŷ)`` to the recorded layer outputs only (``autograd.grad`` with
  the graph kept for the user's own backward, and not to the parameters, so
  DDP's gradient hooks do not fire).  For the *empirical* Fisher it registers
  tensor hooks on the layer outputs instead: the gradients of the user's
  loss, the mean negative log-likelihood over ``n`` outputs, arrive there in
  ``loss.backward()`` and times ``n`` they are the per-output scores.

Every layer output also gets a hook that notes a backward went through it,
so that ``step()`` before ``loss.backward()`` is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.optim._common import (
    LIKELIHOODS,
    as_distribution,
    check_likelihood,
    output_cotangents,
)
from natgrad.optim._kfac_block import KFACBlock

DistBuilder = Callable[[Any], Distribution]


@dataclass
class Call:
    """One call of one layer in a captured forward."""

    forward: int  # index of the captured forward since the last step
    block: int  # index into the preconditioner's blocks
    x: Tensor  # the layer's input (detached)
    n: int  # output distributions of that forward
    gs: list[Tensor] = field(default_factory=list)  # output gradients, one per sampled target


def distribution_builder(likelihood: Any, std: float) -> DistBuilder:
    """``output -> Distribution`` from a likelihood name (or the user's callable)."""
    if callable(likelihood):
        return likelihood
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"likelihood must be 'categorical' (the output is logits, as for F.cross_entropy), "
            "'gaussian' (the output is the mean, as for a squared error) or a callable "
            f"output -> natgrad Distribution; got {likelihood!r}"
        )
    check_likelihood(likelihood, std)

    def build(output: Any) -> Distribution:
        if not isinstance(output, Tensor):
            raise ValueError(
                f"the model returned a {type(output).__name__}, not a Tensor of "
                f"{'logits' if likelihood == 'categorical' else 'means'}; pass "
                "likelihood=<a callable turning the output into a natgrad Distribution>"
            )
        return as_distribution(output, likelihood, std)

    return build


class Capture:
    """The hooks of one preconditioner on one model (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        blocks: list[KFACBlock],
        build: DistBuilder,
        mode: str,
        n_samples: int,
        generator: Callable[[torch.device], torch.Generator],
    ) -> None:
        self.model = model
        self.blocks = blocks
        self.build = build
        self.mode = mode
        self.n_samples = n_samples
        self.generator = generator
        self.enabled = True
        self.active = False
        self.calls: list[Call] = []
        self.forwards = 0
        self.saw_backward = False
        self._handles = [model.register_forward_pre_hook(self._open)]
        for i, b in enumerate(blocks):
            hook = partial(self._record, i)
            self._handles.append(b.module.register_forward_hook(hook, with_kwargs=True))
        # After the layers' hooks: the model may itself be a supported layer.
        self._handles.append(model.register_forward_hook(self._close))

    def remove(self) -> None:
        """Remove every hook from the model."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def take(self) -> tuple[list[Call], bool]:
        """The calls captured since the last take, and whether a backward went through them."""
        calls, saw = self.calls, self.saw_backward
        self.calls, self.forwards, self.saw_backward = [], 0, False
        return calls, saw

    def _open(self, module: nn.Module, args: tuple) -> None:
        if self.enabled and module.training and torch.is_grad_enabled():
            self.active = True
            for b in self.blocks:
                b.clear()

    def _record(
        self, index: int, module: nn.Module, args: tuple, kwargs: dict, output: Any
    ) -> None:
        x = args[0] if args else kwargs.get("input")
        if self.active and isinstance(x, Tensor) and isinstance(output, Tensor):
            self.blocks[index].record(x, output)

    def _flag(self, grad: Tensor) -> None:
        self.saw_backward = True

    def _store(self, call: Call, grad: Tensor) -> None:
        self.saw_backward = True
        call.gs = [grad.detach() * call.n]

    def _close(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.active:
            return
        self.active = False
        recorded = [
            (i, x, out)
            for i, b in enumerate(self.blocks)
            for x, out in zip(b.inputs, b.outputs, strict=True)
        ]
        for b in self.blocks:
            b.clear()
        if not recorded:
            return
        dist = self.build(output)
        if not isinstance(dist, Distribution):
            raise ValueError(
                f"the likelihood callable returned a {type(dist).__name__}; it must return a "
                "natgrad Distribution of the model's output"
            )
        n = dist.batch_size
        fid = self.forwards
        self.forwards += 1
        calls = [Call(fid, i, x, n) for i, x, _ in recorded]
        outs = [out for _, _, out in recorded]
        if self.mode == "empirical":
            for call, out in zip(calls, outs, strict=True):
                out.register_hook(partial(self._store, call))
        else:
            outputs, cots = output_cotangents(
                dist, self.mode, n_samples=self.n_samples, generator=self.generator(outs[0].device)
            )
            if not outputs:
                return
            for u in cots:
                grads = torch.autograd.grad(
                    outputs, outs, list(u), retain_graph=True, allow_unused=True
                )
                for call, g, out in zip(calls, grads, outs, strict=True):
                    call.gs.append(torch.zeros_like(out) if g is None else g)
            # One hook on the model's output sees every backward through the model.
            watch = [output] if isinstance(output, Tensor) and output.requires_grad else outs
            for t in watch:
                t.register_hook(self._flag)
        self.calls.extend(calls)
