"""Shared pieces of the optimisers: closure outputs, output-space cotangents, per-example grads.

The Fisher of a model with output distribution ``p(y|z)``, ``z = z(θ, x)``, on
a batch of ``B`` output distributions is

    F = (1/B) Σ_b J_bᵀ F_out,b J_b = (1/B) Σ_b E_{y~p(·|z_b)} [∇_θ log p(y|z_b) ∇_θ log p(y|z_b)ᵀ].

Every structured approximation here (K-FAC, diagonal) needs *cotangents in
output space* ``u`` such that ``Σ_k u_k u_kᵀ`` is (an estimate of) ``F_out``
per batch element; pulling them back through the network (``Jᵀ u``) gives
per-layer or per-parameter gradients whose outer products estimate ``F``.
:func:`output_cotangents` builds them three ways:

* ``"sample"`` (the true Fisher, Monte Carlo): ``u = ∇_z log p(ŷ|z)/√S`` for
  ``S`` targets ``ŷ`` *sampled from the model*; ``E[u uᵀ] = F_out``.
* ``"expectation"`` (the true Fisher, exact): the columns of a square root
  ``F_out = M Mᵀ`` (per element, from ``fisher_mv`` and ``eigh``).
* ``"empirical"``: ``u = ∇_z log p(y|z)`` at the *observed* targets: the
  empirical Fisher, which is not the Fisher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from natgrad.distributions import Categorical, DiagGaussian, Distribution
from natgrad.fisher import FisherOperator

LIKELIHOODS = ("categorical", "gaussian")
COTANGENT_MODES = ("sample", "expectation", "empirical")

Cotangents = list[tuple[Tensor, ...]]


def check_likelihood(likelihood: str | None, std: float) -> None:
    """Validate the declared likelihood of raw closure outputs."""
    if likelihood is not None and likelihood not in LIKELIHOODS:
        raise ValueError(
            f"likelihood must be None or one of {LIKELIHOODS}, got {likelihood!r}; "
            "or return a natgrad Distribution from the closure"
        )
    if not isinstance(std, (int, float)) or not (0 < std < math.inf):
        raise ValueError(f"likelihood_std must be a finite number > 0, got {std!r}; try 1.0")


def as_distribution(output: Any, likelihood: str | None, std: float = 1.0) -> Distribution:
    """Turn a closure's output into a natgrad :class:`Distribution`.

    A Distribution is returned as is.  A raw tensor needs a declared likelihood:
    ``"categorical"`` reads it as logits, ``"gaussian"`` as the mean of a Gaussian
    with fixed standard deviation ``std`` (``log σ`` a constant, so the Fisher
    on the mean is ``I/σ²``).
    """
    if isinstance(output, Distribution):
        return output
    if isinstance(output, Tensor):
        if likelihood == "categorical":
            return Categorical(output)
        if likelihood == "gaussian":
            log_std = torch.full((), math.log(std), dtype=output.dtype, device=output.device)
            return DiagGaussian(output, log_std)
        raise ValueError(
            f"the closure's output is a raw Tensor of shape {tuple(output.shape)} but no "
            "likelihood was declared; pass likelihood='categorical' (logits) or "
            "likelihood='gaussian' (means) to the optimiser, or return a natgrad Distribution"
        )
    raise ValueError(
        f"the closure's output is a {type(output).__name__}; it must be a natgrad "
        "Distribution or a raw Tensor with a declared likelihood"
    )


def parse_closure_result(
    result: Any, likelihood: str | None, std: float
) -> tuple[Tensor, Distribution, Tensor | None]:
    """Split ``(loss, output[, targets])`` and check each part."""
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        got = type(result).__name__
        if isinstance(result, Tensor):
            got = f"a Tensor of shape {tuple(result.shape)}"
        raise ValueError(
            f"the closure returned {got}; a natgrad closure returns (loss, output) or "
            "(loss, output, targets), where output is the model's Distribution (or raw "
            "logits/means with likelihood= declared), and it does not call backward()"
        )
    loss, output = result[0], result[1]
    targets = result[2] if len(result) == 3 else None
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"the closure's loss must be a scalar Tensor, got {shape}")
    if not loss.requires_grad:
        raise ValueError(
            "the closure's loss does not require grad; compute it from the parameters "
            "(not under torch.no_grad()) and do not detach it"
        )
    if targets is not None and not isinstance(targets, Tensor):
        raise ValueError(f"the closure's targets must be a Tensor, got {type(targets).__name__}")
    dist = as_distribution(output, likelihood, std)
    if dist.batch_size == 0:
        raise ValueError(
            f"the closure's output distribution has an empty batch (batch shape "
            f"{tuple(dist.batch_shape)}): the batch is empty; the Fisher is an average over "
            "the batch and needs at least one row"
        )
    if not any(z.requires_grad for z in dist.params):
        raise ValueError(
            "the closure's output does not depend on any parameter (it does not require "
            "grad); compute it from the model outside torch.no_grad()"
        )
    return loss.reshape(()), dist, targets


def reachable_leaves(tensors: Sequence[Tensor]) -> set[int]:
    """ids of the leaf tensors (requiring grad) that ``tensors`` were computed from."""
    seen: set[int] = set()
    out: set[int] = set()
    stack = []
    for t in tensors:
        if t.grad_fn is not None:
            stack.append(t.grad_fn)
        elif t.requires_grad:
            out.add(id(t))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        var = getattr(node, "variable", None)
        if isinstance(var, Tensor):
            out.add(id(var))
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return out


def _require_grad_idx(dist: Distribution) -> list[int]:
    return [i for i, z in enumerate(dist.params) if z.requires_grad]


def output_cotangents(
    dist: Distribution,
    mode: str,
    *,
    targets: Tensor | None = None,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], Cotangents]:
    """Output-space cotangents ``u_k`` with ``Σ_k u_k u_kᵀ ≈ F_out`` per element (see module doc).

    Returns:
        ``(outputs, cotangents)``: the distribution parameters that require grad
        (to differentiate from) and a list of tuples, one tensor per output.
    """
    if mode not in COTANGENT_MODES:
        raise ValueError(f"mode must be one of {COTANGENT_MODES}, got {mode!r}")
    if not isinstance(dist, Distribution):
        raise ValueError(f"dist must be a natgrad Distribution, got {type(dist).__name__}")
    if dist.batch_size == 0:
        raise ValueError(
            f"dist has an empty batch (batch shape {tuple(dist.batch_shape)}): the batch is "
            "empty; the Fisher estimate is an average over the batch and needs at least one row"
        )
    if mode == "empirical" and targets is None:
        raise ValueError(
            "the empirical Fisher needs the observed targets: return "
            "(loss, output, targets) from the closure, or pass targets="
        )
    idx = _require_grad_idx(dist)
    outputs = [dist.params[i] for i in idx]
    if mode != "expectation" and type(dist) in (Categorical, DiagGaussian):
        with torch.no_grad():
            if mode == "empirical":
                return outputs, [_analytic_score(dist, idx, targets, generator)]
            draws = [_analytic_score(dist, idx, None, generator) for _ in range(n_samples)]
            if n_samples > 1:
                draws = [tuple(u / math.sqrt(n_samples) for u in c) for c in draws]
        return outputs, draws
    leaves = [z.detach().requires_grad_(True) for z in dist.params]
    d = dist.with_params(leaves)
    if mode == "expectation":
        return outputs, _sqrt_columns(d, idx)
    if mode == "empirical":
        assert targets is not None  # checked above
        ys = [targets]
    else:
        # Sample from a separate object: a family may cache values computed under no_grad.
        source = dist.detach()
        ys = [source.sample(generator) for _ in range(n_samples)]
    scale = 1.0 / math.sqrt(len(ys))
    cots: Cotangents = []
    with torch.enable_grad():
        for y in ys:
            try:
                lp = d.log_prob(y).sum()
            except (RuntimeError, IndexError) as err:
                raise ValueError(
                    f"targets of shape {tuple(y.shape)} do not fit the output distribution "
                    f"{d!r}: {err}"
                ) from None
            grads = torch.autograd.grad(lp, [leaves[i] for i in idx], allow_unused=True)
            cots.append(
                tuple(
                    torch.zeros_like(leaves[i]) if g is None else g * scale
                    for g, i in zip(grads, idx, strict=True)
                )
            )
    return outputs, cots


def _analytic_score(
    dist: Distribution, idx: list[int], y: Tensor | None, generator: torch.Generator | None
) -> tuple[Tensor, ...]:
    """``∇_z log p(y|z)`` in closed form; ``y`` is sampled from ``dist`` when None.

    Categorical (logits): ``onehot(y) − p``.  Gaussian (mean, log σ) with
    ``ε = (y − μ)/σ``: ``ε/σ`` and ``ε² − 1``.
    """
    if isinstance(dist, Categorical):
        p = torch.softmax(dist.logits.detach(), dim=-1)
        if y is None:
            u = torch.rand(p.shape[:-1] + (1,), generator=generator, dtype=p.dtype, device=p.device)
            # The first category whose cumulative probability reaches u > 0 has p > 0, so a
            # masked (-inf) category is never drawn; rounding may leave u above the total,
            # hence the clamp to the last category with p > 0.
            last = p.shape[-1] - 1 - (p > 0).flip(-1).to(torch.uint8).argmax(-1)
            u.clamp_(min=torch.finfo(p.dtype).tiny)
            y = torch.minimum((p.cumsum(-1) < u).sum(-1), last)
        elif y.shape != p.shape[:-1]:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not fit categorical logits of shape "
                f"{tuple(p.shape)}; pass class indices of shape {tuple(p.shape[:-1])}"
            )
        return (torch.zeros_like(p).scatter_(-1, y.long().unsqueeze(-1), 1.0) - p,)
    assert isinstance(dist, DiagGaussian)
    mean, log_std = dist.mean.detach(), dist.log_std.detach()
    inv_std = torch.exp(-log_std)
    if y is None:
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    elif y.shape != mean.shape:
        raise ValueError(
            f"targets of shape {tuple(y.shape)} do not fit Gaussian means of shape "
            f"{tuple(mean.shape)}"
        )
    else:
        eps = (y - mean) * inv_std
    scores = (eps * inv_std, eps.square() - 1.0)
    return tuple(scores[i] for i in idx)


def _sqrt_columns(d: Distribution, idx: list[int]) -> Cotangents:
    """Columns of ``M`` with ``M Mᵀ = F_out`` per batch element, from ``fisher_mv`` and ``eigh``."""
    params = d.params
    batch = d.batch_shape
    dims = []
    for i in idx:
        z = params[i]
        if z.shape[:-1] != batch or z.dim() != len(batch) + 1:
            raise ValueError(
                f"expectation=True needs output parameters of shape (*batch, d); parameter {i} "
                f"has shape {tuple(z.shape)} for batch shape {tuple(batch)}"
            )
        dims.append(z.shape[-1])
    total = sum(dims)
    cols = []
    for j in range(total):
        tangents = [torch.zeros_like(z) for z in params]
        k = j
        for i, di in zip(idx, dims, strict=True):
            if k < di:
                tangents[i][..., k] = 1.0
                break
            k -= di
        out = d.fisher_mv(tangents)
        cols.append(torch.cat([out[i].detach() for i in idx], dim=-1))
    fmat = torch.stack(cols, dim=-1)  # (*batch, total, total)
    fmat = 0.5 * (fmat + fmat.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(fmat)
    root = evecs * evals.clamp(min=0).sqrt().unsqueeze(-2)
    return [tuple(torch.split(root[..., k], dims, dim=-1)) for k in range(total)]


def per_example_grads(
    outputs: Sequence[Tensor],
    cotangent: Sequence[Tensor],
    params: Sequence[Tensor],
    batch_shape: torch.Size,
) -> list[Tensor]:
    """Per-element pulled-back cotangents ``J_bᵀ u_b``, each ``(B, *p.shape)``.

    One vmapped backward (``is_grads_batched``) with a one-hot-masked copy of
    the cotangent per batch element; memory is ``B²·dim(z) + B·dim(θ)``.
    """
    n = int(math.prod(batch_shape))
    ref = outputs[0]
    eye = torch.eye(n, dtype=ref.dtype, device=ref.device).reshape(n, *batch_shape, 1)
    batched = [eye * u.unsqueeze(0) for u in cotangent]
    grads = torch.autograd.grad(
        list(outputs),
        list(params),
        grad_outputs=batched,
        is_grads_batched=True,
        retain_graph=True,
        allow_unused=True,
    )
    return [
        torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
        for g, p in zip(grads, params, strict=True)
    ]


class ScoreFisher(FisherOperator):
    """``(1/B) Sᵀ S`` from a matrix of per-element scores ``S`` (rows = batch elements).

    Built from the closure's own forward; with observed targets this is the
    empirical Fisher of :class:`natgrad.fisher.EmpiricalFisher`.
    """

    def __init__(self, scores: Tensor, *, damping: float = 0.0) -> None:
        self.scores = scores
        self.dim = scores.shape[1]
        self.dtype = scores.dtype
        self.damping = damping

    def _mv(self, v: Tensor) -> Tensor:
        return self.scores.T @ (self.scores @ v) / self.scores.shape[0]


def score_fisher(
    dist: Distribution, targets: Tensor | None, params: Sequence[Tensor], damping: float
) -> ScoreFisher:
    """The empirical Fisher of ``params`` at observed ``targets``, sharing ``dist``'s graph."""
    outputs, cots = output_cotangents(dist, "empirical", targets=targets)
    per = per_example_grads(outputs, cots[0], params, dist.batch_shape)
    scores = torch.cat([g.reshape(g.shape[0], -1) for g in per], dim=1)
    return ScoreFisher(scores, damping=damping)


def resolve_damping(damping: Any, step: int, name: str = "damping") -> float:
    """A float damping, or ``damping(step)`` for a schedule; checked finite and >= 0."""
    value = damping(step) if callable(damping) else damping
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 <= value < math.inf)
    ):
        where = f" (returned by the schedule at step {step})" if callable(damping) else ""
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}{where}; try 1e-3")
    return float(value)
