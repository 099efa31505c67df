"""K-FAC: a Kronecker-factored Fisher for ``nn.Linear`` and ``nn.Conv2d`` layers.

The Fisher of a network is approximated block-diagonally, one block per
layer, each block a Kronecker product ``G ⊗ A`` of small matrices (see
:mod:`natgrad.optim._kfac_block` for the maths): ``A = E[ã ãᵀ]`` over the
layer's input activations (with a 1 appended for the bias) and ``G = E[g gᵀ]``
over its pre-activation gradients.  Inverting a block costs two small
Cholesky inverses instead of one of size ``dim(W)``.

**True vs empirical Fisher.**  ``g`` is the gradient of the log-likelihood of
targets **sampled from the model's own output distribution** (one per input
by default, ``n_samples`` for more): this estimates the true Fisher.
``expectation=True`` replaces the sample by the exact expectation over the
output distribution (one backward per output dimension; for a unit-variance
Gaussian output ``G = I`` and for a categorical ``G = E[diag(p) − ppᵀ]`` at the
last layer).  ``empirical=True`` uses the *observed* targets instead — the
empirical Fisher, which is a different matrix away from a perfect fit; it is
named so in ``repr`` and :attr:`fisher_kind`.

**Unsupported modules.**  Every module owning trainable parameters must be
an ``nn.Linear`` or an ``nn.Conv2d`` with ``groups=1``; anything else
(``nn.LayerNorm``, ``nn.Embedding``, a bare ``nn.Parameter`` on a container…)
raises ``ValueError`` naming the module path and type, unless
``unsupported="diag"``: those parameters then get a diagonal Fisher
(:class:`~natgrad.optim.diag.DiagonalFisher`) from the same sampled targets.

**Damping and inverses.**  ``damping`` is a float or a schedule
``damping(step)`` (``step`` = factor updates so far).  Factors are EMAs with
decay ``factor_decay``; the π-corrected damped inverses are recomputed every
``inverse_every`` updates, and whenever λ changes (a float set anew, or a
schedule whose value moved: a schedule that changes at every step costs an
inverse per step, a piecewise-constant one costs nothing extra), so a solve
always applies the λ of :meth:`current_damping`.  A damped
factor that is not positive definite raises :class:`KFACFactorError` naming
the module — never NaNs.

**Use on its own** (e.g. an ACKTR-style policy step)::

    kfac = KFAC(policy, damping=1e-2, inverse_every=10)
    with kfac.capture():                 # hooks record layer inputs/outputs
        dist = make_dist(policy(obs))    # a natgrad Distribution
    kfac.update_factors(dist)            # samples ŷ ~ dist, backprops log p(ŷ) to layers
    grads = torch.autograd.grad(loss(dist), kfac.params)
    nat = kfac.solve(grads)              # (F̂ ⊕ λ)⁻¹ g, one tensor per kfac.params
    kl = 0.5 * kfac.quad(nat)            # predicted KL of the step `nat` (undamped F̂)
    # ... or as a CG preconditioner over a flat vector in your own order:
    # cg(fisher.mv, g, preconditioner=lambda r: kfac.precondition(r, params=my_params))

``update_factors`` keeps the forward graph (``retain_graph``) so the caller
can still differentiate its loss.  Inside :class:`~natgrad.optim.NaturalGradient`
(``fisher="kfac"``) all of this is done for you.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.optim._base import Damping, Preconditioner
from natgrad.optim._common import output_cotangents
from natgrad.optim._kfac_block import KFACBlock, KFACFactorError
from natgrad.optim.diag import DiagonalFisher
from natgrad.params import as_param_list

__all__ = ["KFAC", "KFACFactorError"]

UNSUPPORTED = ("error", "diag")


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1
    return isinstance(module, nn.Linear)


class KFAC(Preconditioner):
    """Kronecker-factored Fisher of a model's Linear/Conv2d layers.

    Args:
        model: The network; hooks are registered on its supported layers.
        params: Restrict to these parameters of ``model`` (default: all that
            require grad).  A layer whose bias is left out gets a weight-only block.
        damping: λ, float or schedule ``damping(step)``.
        factor_decay: EMA decay ρ of ``A`` and ``G``.
        inverse_every: Recompute the damped inverses every this many updates.
        empirical: Observed targets (the empirical Fisher) instead of sampled ones.
        expectation: Exact output-space expectation instead of sampling.
        n_samples: Sampled targets per input.
        unsupported: ``"error"`` (default) or ``"diag"`` for parameters of modules
            K-FAC cannot factor.
        diag_per_sample: Per-element squares for the diagonal part (see
            :class:`DiagonalFisher`).
        seed: Seed of the private sampling generator.

    Raises:
        ValueError: a parameter is not in ``model``, a module is unsupported, or
            an option is out of range.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        params: Sequence[Tensor] | None = None,
        damping: Damping = 1e-3,
        factor_decay: float = 0.95,
        inverse_every: int = 10,
        empirical: bool = False,
        expectation: bool = False,
        n_samples: int = 1,
        unsupported: str = "error",
        diag_per_sample: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            damping=damping,
            decay=factor_decay,
            empirical=empirical,
            expectation=expectation,
            n_samples=n_samples,
            seed=seed,
        )
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if (
            isinstance(inverse_every, bool)
            or not isinstance(inverse_every, int)
            or inverse_every < 1
        ):
            raise ValueError(f"inverse_every must be an int >= 1, got {inverse_every!r}; try 10")
        if unsupported not in UNSUPPORTED:
            raise ValueError(f"unsupported must be one of {UNSUPPORTED}, got {unsupported!r}")
        self.inverse_every = inverse_every
        self.unsupported = unsupported
        chosen = None if params is None else as_param_list(params)
        selected = None if chosen is None else {id(p) for p in chosen}
        self.blocks: list[KFACBlock] = []
        diag_params: list[Tensor] = []
        self.diag_modules: list[str] = []
        claimed: set[int] = set()
        for path, module in model.named_modules():
            own = [
                p
                for p in module.parameters(recurse=False)
                if p.requires_grad and (selected is None or id(p) in selected)
            ]
            if not own:
                continue
            for p in own:
                if id(p) in claimed:
                    raise ValueError(
                        f"a parameter of module '{path or '<root>'}' is shared with another "
                        "module; K-FAC needs each parameter in a single layer"
                    )
                claimed.add(id(p))
            name = f"'{path or '<root>'}' ({type(module).__name__})"
            if _supported(module):
                ids = {id(p) for p in own}
                bias = getattr(module, "bias", None)
                has_b = bias is not None and id(bias) in ids
                self.blocks.append(KFACBlock(path, module, id(module.weight) in ids, has_b))
            elif unsupported == "diag":
                diag_params.extend(own)
                self.diag_modules.append(name)
            else:
                raise ValueError(
                    f"K-FAC cannot factor module {name}: it supports nn.Linear and nn.Conv2d "
                    "(groups=1) only; pass unsupported='diag' to give its parameters a "
                    "diagonal Fisher, or leave them out of params"
                )
        if chosen is not None:
            for i, p in enumerate(chosen):
                if id(p) not in claimed:
                    why = "does not require grad" if not p.requires_grad else "is not in the model"
                    raise ValueError(
                        f"params[{i}] (shape {tuple(p.shape)}) {why}; pass trainable tensors "
                        f"from the {type(model).__name__} given as model"
                    )
        if not claimed:
            raise ValueError(f"the {type(model).__name__} has no trainable parameters")
        self.params = [p for b in self.blocks for p in b.params] + diag_params
        self.diag: DiagonalFisher | None = None
        if diag_params:
            self.diag = DiagonalFisher(
                diag_params,
                damping=damping,
                decay=factor_decay,
                per_sample=diag_per_sample or self.mode != "sample",
                seed=self.seed,
            )
        self._capturing = False
        self._handles = [
            b.module.register_forward_hook(self._hook(b), with_kwargs=True) for b in self.blocks
        ]
        self.inverse_step: int | None = None
        self.inverse_damping: float | None = None

    def _hook(self, block: KFACBlock):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            if self._capturing:
                x = args[0] if args else kwargs["input"]
                block.record(x, output)

        return hook

    def remove_hooks(self) -> None:
        """Detach from the model (the object cannot capture afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @contextlib.contextmanager
    def capture(self) -> Iterator[KFAC]:
        """Record the inputs and outputs of the layers during the forward passes inside."""
        for b in self.blocks:
            b.clear()
        self._capturing = True
        try:
            yield self
        finally:
            self._capturing = False

    def update_factors(self, dist: Distribution, targets: Tensor | None = None) -> None:
        """Fold the captured forward into the factor EMAs.

        Args:
            dist: The model's output distribution from the captured forward
                (with autograd on).  Its graph is retained for the caller.
            targets: Observed targets; required (and used) only when ``empirical``.

        Raises:
            ValueError: a layer was not called inside :meth:`capture`, or ran
                under ``torch.no_grad()``, or ``targets`` are missing or misshapen.
        """
        for b in self.blocks:
            if not b.outputs:
                why = (
                    "ran under torch.no_grad()"
                    if b.saw_no_grad
                    else "was not called inside `with kfac.capture():`"
                )
                raise ValueError(
                    f"K-FAC layer {b.path} ({type(b.module).__name__}) {why}; run the forward "
                    "that produced dist inside kfac.capture() with autograd on, calling each "
                    "layer as a module (not through its weight)"
                )
        outputs, cots = output_cotangents(
            dist,
            self.mode,
            targets=targets,
            n_samples=self.n_samples,
            generator=self.generator(dist.params[0].device),
        )
        layer_out = [o for b in self.blocks for o in b.outputs]
        g_rows: list[list[Tensor]] = [[] for _ in self.blocks]
        for u in cots:
            grads = torch.autograd.grad(
                outputs, layer_out, list(u), retain_graph=True, allow_unused=True
            )
            pos = 0
            for i, b in enumerate(self.blocks):
                for _ in b.outputs:
                    g, pos = grads[pos], pos + 1
                    if g is not None:
                        g_rows[i].append(b.output_rows(g))
        n = dist.batch_size
        for b, rows in zip(self.blocks, g_rows, strict=True):
            b.update_A(self.decay)
            b.update_G(rows, n, self.decay)
            b.clear()
        if self.diag is not None:
            self.diag.accumulate(outputs, cots, dist.batch_shape)
        self.steps += 1

    def update_inverses(self, damping: float | None = None) -> None:
        """Recompute every block's damped inverse now, at ``damping`` or the current λ."""
        self._check_ready()
        lam = self.current_damping() if damping is None else float(damping)
        for b in self.blocks:
            b.invert(lam)
        self.inverse_step, self.inverse_damping = self.steps, lam

    def _refresh(self, damping: float) -> None:
        """Inverses due every ``inverse_every`` updates, and whenever λ changed: the
        blocks and the diagonal part then always apply the same λ, the one asked for."""
        due = self.inverse_step is None or self.steps - self.inverse_step >= self.inverse_every
        if due or self.inverse_damping != damping:
            self.update_inverses(damping)

    def _solve(self, grads: list[Tensor], damping: float) -> list[Tensor]:
        self._refresh(damping)
        out: list[Tensor] = []
        pos = 0
        for b in self.blocks:
            k = len(b.params)
            out.extend(b.solve(grads[pos : pos + k]))
            pos += k
        if self.diag is not None:
            out.extend(self.diag._solve(grads[pos:], damping))
        return out

    def _solve_quad(self, grads: list[Tensor], damping: float) -> tuple[list[Tensor], Tensor]:
        self._refresh(damping)
        out: list[Tensor] = []
        quads = []
        pos = 0
        for b in self.blocks:
            k = len(b.params)
            m = b.solve_matrix(grads[pos : pos + k])
            out.extend(b.split(m))
            quads.append(b.quad_matrix(m))
            pos += k
        if self.diag is not None:
            xs = self.diag._solve(grads[pos:], damping)
            out.extend(xs)
            quads.append(self.diag._quad(xs))
        return out, torch.stack(quads).sum()

    def _quad(self, xs: list[Tensor]) -> Tensor:
        total = xs[0].new_zeros(())
        pos = 0
        for b in self.blocks:
            k = len(b.params)
            total = total + b.quad(xs[pos : pos + k])
            pos += k
        if self.diag is not None:
            total = total + self.diag._quad(xs[pos:])
        return total

    def dense(self) -> Tensor:
        """The undamped block-diagonal ``F̂`` in flat ``self.params`` order (small models)."""
        self._check_ready()
        parts = [b.dense() for b in self.blocks]
        if self.diag is not None:
            parts.append(self.diag.dense())
        return torch.block_diag(*parts)

    def state_dict(self) -> dict[str, Any]:
        """Factors, inverses, step counts and the sampling generator's state."""
        state = self._base_state()
        clone = lambda t: None if t is None else t.clone()  # noqa: E731
        state["blocks"] = [
            {
                "path": b.path,
                "A": clone(b.A),
                "G": clone(b.G),
                "A_inv": clone(b.A_inv),
                "G_inv": clone(b.G_inv),
            }  # fmt: skip
            for b in self.blocks
        ]
        state["inverse_step"] = self.inverse_step
        state["inverse_damping"] = self.inverse_damping
        state["diag"] = None if self.diag is None else self.diag.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` of a KFAC over the same layers."""
        saved = state["blocks"]
        paths = [b.path for b in self.blocks]
        if [s["path"] for s in saved] != paths:
            raise ValueError(
                f"state_dict is for K-FAC layers {[s['path'] for s in saved]}, but this KFAC "
                f"has {paths}"
            )
        for b, s in zip(self.blocks, saved, strict=True):
            if s["A"] is not None and (
                s["A"].shape != (b.a_dim, b.a_dim) or s["G"].shape != (b.out_dim, b.out_dim)
            ):
                raise ValueError(f"state_dict factors of layer {b.path} have the wrong shape")
        ref = self.params[0]
        for b, s in zip(self.blocks, saved, strict=True):
            for key in ("A", "G", "A_inv", "G_inv"):
                t = s[key]
                setattr(b, key, None if t is None else t.detach().clone().to(ref))
        if (self.diag is None) != (state.get("diag") is None):
            raise ValueError("state_dict and this KFAC disagree on having a diagonal part")
        if self.diag is not None:
            self.diag.load_state_dict(state["diag"])
        self._load_base_state(state)
        self.inverse_step = state["inverse_step"]
        self.inverse_damping = state["inverse_damping"]

    def __repr__(self) -> str:
        blocks = ", ".join(repr(b) for b in self.blocks)
        diag = f", diagonal for [{', '.join(self.diag_modules)}]" if self.diag_modules else ""
        return (
            f"KFAC({self.fisher_kind}; layers [{blocks}]{diag}; damping={self.damping!r}, "
            f"factor_decay={self.decay}, inverse_every={self.inverse_every}, steps={self.steps})"
        )
