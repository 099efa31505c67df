"""The layers a layer-wise preconditioner handles, and their per-layer statistics.

:class:`~natgrad.optim._kfac_block.KFACBlock` holds the maths of one
``nn.Linear``/``nn.Conv2d`` K-FAC block.  This module adds the other layer
types and what the preconditioners need from a captured forward:

* :class:`Conv1dBlock`: a ``nn.Conv1d`` read as a ``(1, k)`` ``nn.Conv2d``
  on inputs with a height of one (the same patches and factors).
* :class:`EmbeddingBlock`: ``s = W[t]`` is a linear layer on one-hot inputs
  ``a = e_t``, so ``A = E[a aᵀ]`` is *diagonal* (the token frequencies) and the
  block of ``W`` (``V × D``, one row per token) is ``diag(A) ⊗ G``.  Its damped
  inverse is ``diag(A + π√λ)⁻¹ ∇W (G + √λ/π I)⁻¹`` with
  ``π² = (tr A / V) / (tr G / D)`` (Martens & Grosse 2015, as for the others).
* :func:`find_blocks`: one block per supported module, the others listed.
* :func:`per_example_squares`: ``Σ_e ĝ_e²`` per parameter, the per-example
  squared gradients that a diagonal Fisher sums, from the layer inputs and
  output gradients alone (``ĝ_e = Σ_p g_ep ã_epᵀ`` for a Linear/Conv layer,
  ``p`` over positions), without a per-example backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from natgrad.optim._kfac_block import KFACBlock

SUPPORTED = (
    "nn.Linear, nn.Conv1d and nn.Conv2d (groups=1), and nn.Embedding (dense gradients, "
    "scale_grad_by_freq=False)"
)

Block = KFACBlock  # every block type below is a KFACBlock


class Conv1dBlock(KFACBlock):
    """K-FAC block of a ``nn.Conv1d``: the ``(1, k)`` convolution over a height of one."""

    def __init__(self, path: str, module: nn.Conv1d, weight: bool, bias: bool) -> None:
        super().__init__(path, module, weight, bias)
        self.conv = True

    def _patches(self, x: Tensor) -> Tensor:
        m = self.module
        assert isinstance(m, nn.Conv1d)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        pad = m._reversed_padding_repeated_twice
        if any(pad):
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, pad, mode=mode)
        (k,), (d,), (s,) = m.kernel_size, m.dilation, m.stride
        # A strided view (batch, channels, positions, k), copied once into rows.
        win = x.unfold(2, (k - 1) * d + 1, s)[..., ::d]
        return win.permute(0, 2, 1, 3).reshape(-1, win.shape[1] * k)

    def output_rows(self, g: Tensor) -> Tensor:
        if g.dim() == 2:
            g = g.unsqueeze(0)
        return g.transpose(1, 2).reshape(-1, self.out_dim)


class EmbeddingBlock(KFACBlock):
    """K-FAC block of a ``nn.Embedding``: ``A`` is the vector of token frequencies."""

    def __init__(self, path: str, module: nn.Embedding) -> None:  # noqa: D107
        self.path = path or "<root>"
        self.module = module
        self.conv = False
        self.vocab, self.out_dim = int(module.num_embeddings), int(module.embedding_dim)
        self.in_dim = self.a_dim = self.vocab
        self.has_weight, self.has_bias = True, False
        self.padding_idx: int | None = module.padding_idx
        self.params = [module.weight]
        self.A = self.G = self.A_inv = self.G_inv = None
        self.inputs, self.outputs = [], []
        self.saw_no_grad = False

    def __repr__(self) -> str:
        return f"{self.path} (Embedding: A diagonal {self.vocab}, G {self.out_dim}x{self.out_dim})"

    def tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids as ``(R,)`` and the mask of rows that are not ``padding_idx``."""
        t = x.reshape(-1).long()
        pad = self.padding_idx
        keep = torch.ones_like(t, dtype=torch.bool) if pad is None else t.ne(pad)
        return t, keep

    def output_rows(self, g: Tensor) -> Tensor:
        return g.reshape(-1, self.out_dim)

    def grad_matrix(self, grads: list[Tensor]) -> Tensor:
        return grads[0]

    def split(self, m: Tensor) -> list[Tensor]:
        return [m]

    def invert(self, damping: float) -> None:
        assert self.A is not None and self.G is not None
        ta = float(self.A.mean())
        tg = float(torch.diagonal(self.G).mean())
        pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 and math.isfinite(ta / tg) else 1.0
        root = math.sqrt(damping)
        shifted = self.A + pi * root
        if not bool(torch.isfinite(self.A).all()) or float(shifted.min()) <= 0:
            raise ValueError(
                f"the Embedding block {self.path} has token frequencies that are zero or not "
                f"finite after damping={damping!r}; use damping > 0 (e.g. 1e-3)"
            )
        self.A_inv = shifted.reciprocal()
        self.G_inv = self._spd_inverse(self.G, root / pi, "G", damping)

    def solve_matrix(self, grads: list[Tensor]) -> Tensor:
        assert self.A_inv is not None and self.G_inv is not None
        return self.A_inv.unsqueeze(1) * grads[0] @ self.G_inv

    def quad_matrix(self, m: Tensor) -> Tensor:
        assert self.A is not None and self.G is not None
        return (m * (self.A.unsqueeze(1) * m @ self.G)).sum()

    def dense(self) -> Tensor:
        """``diag(A) ⊗ G`` in the flat (row-major) order of the weight."""
        assert self.A is not None and self.G is not None
        return torch.kron(torch.diag(self.A), self.G)


def make_block(path: str, module: nn.Module) -> KFACBlock | None:
    """The block of a supported module (trainable weight or bias), or None."""
    w = getattr(module, "weight", None)
    b = getattr(module, "bias", None)
    train_w = isinstance(w, Tensor) and w.requires_grad
    train_b = isinstance(b, Tensor) and b.requires_grad
    if isinstance(module, nn.Embedding):
        if not train_w or module.sparse or module.scale_grad_by_freq:
            return None
        return EmbeddingBlock(path, module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups != 1:
        return None
    if isinstance(module, nn.Conv1d):
        return Conv1dBlock(path, module, train_w, train_b)
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        return KFACBlock(path, module, train_w, train_b)
    return None


def find_blocks(
    model: nn.Module, skip_layers: Sequence[str], owner: str
) -> tuple[list[KFACBlock], list[str], list[str]]:
    """One block per supported module with trainable parameters, and the others' names.

    Args:
        model: The network.
        skip_layers: Module paths (``"0"``, ``"encoder.fc"``) or class names
            (``"Linear"``) to leave alone.
        owner: The class name used in error messages.

    Returns:
        The blocks, the unsupported modules and the modules left out by ``skip_layers``
        (as ``"'path' (Type)"``).

    Raises:
        ValueError: a parameter belongs to two modules, or no module is supported.
    """
    blocks: list[KFACBlock] = []
    skipped: list[str] = []
    listed: list[str] = []
    claimed: set[int] = set()
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        for p in own:
            if id(p) in claimed:
                raise ValueError(
                    f"a parameter of module '{path or '<root>'}' is shared with another module; "
                    f"{owner} needs each parameter in a single layer"
                )
            claimed.add(id(p))
        name = f"'{path or '<root>'}' ({type(module).__name__})"
        if path in skip_layers or type(module).__name__ in skip_layers:
            listed.append(name)
            continue
        block = make_block(path, module)
        if block is None:
            skipped.append(name)
        else:
            blocks.append(block)
    if not blocks:
        found = ", ".join(skipped + listed) if skipped or listed else "none"
        raise ValueError(
            f"{owner} found no layer it can precondition in the {type(model).__name__}: it "
            f"supports {SUPPORTED}; modules with trainable parameters: {found}"
        )
    return blocks, skipped, listed


def _example_rows(block: KFACBlock, x: Tensor) -> Tensor:
    """``ã`` rows grouped by example: ``(E, P, a_dim)`` (E = leading dimension of x)."""
    if block.conv:
        batched = 4 if isinstance(block.module, nn.Conv2d) else 3
        e = x.shape[0] if x.dim() == batched else 1
        rows = block._patches(x)
    else:
        e = x.shape[0] if x.dim() >= 2 else 1
        rows = x.reshape(-1, x.shape[-1])
    if not block.has_weight:
        rows = rows[:, :0]
    if block.has_bias:
        rows = F.pad(rows, (0, 1), value=1.0)
    return rows.reshape(e, -1, rows.shape[-1])


def per_example_squares(
    block: KFACBlock, xs: Sequence[Tensor], gs: Sequence[Tensor]
) -> list[Tensor]:
    """``Σ_e ĝ_e²`` for the block's parameters, from one forward's calls of the layer.

    Args:
        block: The layer.
        xs: Its inputs, one per call in the forward.
        gs: The gradients at its outputs, one per call.  Calls with the same
            leading dimension are summed per example (weight sharing), others
            count as separate examples.

    Returns:
        One tensor per ``block.params``, shaped like it.
    """
    if isinstance(block, EmbeddingBlock):
        return [_embedding_squares(block, xs, gs)]
    per: Tensor | None = None
    parts = []
    for x, g in zip(xs, gs, strict=True):
        a = _example_rows(block, x)
        o = block.output_rows(g).reshape(a.shape[0], -1, block.out_dim)
        if a.shape[1] == 1 and len(xs) == 1:  # one row per example: no per-example tensor
            sq = o[:, 0].square().T @ a[:, 0].square()
            return block.split(sq)
        term = torch.einsum("epo,epi->eoi", o, a)
        if per is not None and per.shape[0] == term.shape[0]:
            per = per + term
        else:
            if per is not None:
                parts.append(per)
            per = term
    assert per is not None
    parts.append(per)
    return block.split(sum(p.square().sum(0) for p in parts))  # type: ignore[arg-type]


def _embedding_squares(block: EmbeddingBlock, xs: Sequence[Tensor], gs: Sequence[Tensor]) -> Tensor:
    """Per-example squared embedding gradients: rows of the same (example, token) add first."""
    ref = gs[0]
    out = torch.zeros(block.vocab, block.out_dim, dtype=ref.dtype, device=ref.device)
    for x, g in zip(xs, gs, strict=True):
        e = x.shape[0] if x.dim() >= 2 else 1
        t, keep = block.tokens(x)
        rows = block.output_rows(g)
        example = torch.arange(e, device=t.device).repeat_interleave(t.numel() // e)
        keys = (example * block.vocab + t)[keep]
        uniq, inv = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(uniq.numel(), block.out_dim, dtype=ref.dtype, device=ref.device)
        summed.index_add_(0, inv, rows[keep])
        out.index_add_(0, uniq % block.vocab, summed.square())
    return out
