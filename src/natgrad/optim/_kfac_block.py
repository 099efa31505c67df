"""One K-FAC block: the Kronecker factors of a single ``nn.Linear`` or ``nn.Conv2d``.

For a layer ``s = W ã`` (``ã = [a; 1]`` when the bias is a parameter), with
``R`` rows of inputs seen in the batch (batch elements × positions) and ``B``
output distributions, the Fisher block of ``[W | b]`` (row-major vec) is
approximated by

    F̂ = G ⊗ A,   A = (1/R) Σ_r ã_r ã_rᵀ,   G = (1/B) Σ_r g_r g_rᵀ,

where ``g_r = ∂ log p(ŷ)/∂s_r`` is the pre-activation gradient for targets ŷ
drawn from the model.  For a convolution ``ã_r`` is an input patch (as
``F.unfold`` lays it out, matching ``weight.reshape(out, -1)``) and ``r`` runs
over images × output positions (KFC, Grosse & Martens 2016): ``A`` averages
over positions and ``G`` sums over them.  For a single row per output (an
MLP) these are the usual K-FAC factors.

The damped inverse uses the π-corrected Tikhonov split (Martens & Grosse 2015)

    (F̂ ⊕ λ)⁻¹ = (A + π√λ I)⁻¹ ⊗ (G + √λ/π I)⁻¹,  π² = (tr A / dim A) / (tr G / dim G),

applied to a gradient matrix ``M = [∇W | ∇b]`` as ``(G + …)⁻¹ M (A + …)⁻¹``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KFACFactorError(ValueError):
    """A damped Kronecker factor is not positive definite (or not finite)."""


class KFACBlock:
    """Factors, inverses and captured activations of one layer."""

    def __init__(self, path: str, module: nn.Module, weight: bool, bias: bool) -> None:
        self.path = path or "<root>"
        self.module = module
        self.conv = isinstance(module, nn.Conv2d)
        w, b = module.weight, module.bias
        assert isinstance(w, Tensor)  # Linear/Conv2d, checked by the caller
        self.out_dim = int(w.shape[0])
        self.in_dim = int(w[0].numel()) if weight else 0
        self.has_weight, self.has_bias = weight, bias
        self.params: list[Tensor] = [w] if weight else []
        if bias:
            assert isinstance(b, Tensor)
            self.params.append(b)
        self.a_dim = self.in_dim + (1 if bias else 0)
        self.A: Tensor | None = None
        self.G: Tensor | None = None
        self.A_inv: Tensor | None = None
        self.G_inv: Tensor | None = None
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.saw_no_grad = False

    def __repr__(self) -> str:
        kind = type(self.module).__name__
        return f"{self.path} ({kind}: A {self.a_dim}x{self.a_dim}, G {self.out_dim}x{self.out_dim})"

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()
        self.saw_no_grad = False

    def record(self, x: Tensor, out: Tensor) -> None:
        if not out.requires_grad:
            self.saw_no_grad = True
            return
        self.inputs.append(x.detach())
        self.outputs.append(out)

    def _patches(self, x: Tensor) -> Tensor:
        m = self.module
        assert isinstance(m, nn.Conv2d)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        pad = m._reversed_padding_repeated_twice
        if any(pad):
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, pad, mode=mode)
        cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=0, stride=m.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def input_rows(self, inputs: list[Tensor] | None = None, *, bias_column: bool = True) -> Tensor:
        """``ã`` for every captured row (or every row of ``inputs``): ``(R, a_dim)``.

        With ``bias_column=False`` the column of ones for the bias is left out.
        """
        inputs = self.inputs if inputs is None else inputs
        if self.conv:
            parts = [self._patches(x) for x in inputs]
        else:
            parts = [x if x.dim() == 2 else x.reshape(-1, x.shape[-1]) for x in inputs]
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        if not self.has_weight:
            rows = rows[:, :0]
        if self.has_bias and bias_column:
            rows = F.pad(rows, (0, 1), value=1.0)
        return rows

    def output_rows(self, g: Tensor) -> Tensor:
        """Pre-activation gradients as ``(R, out_dim)`` rows."""
        if self.conv:
            if g.dim() == 3:
                g = g.unsqueeze(0)
            return g.permute(0, 2, 3, 1).reshape(-1, self.out_dim)
        return g if g.dim() == 2 else g.reshape(-1, self.out_dim)

    @staticmethod
    def _ema(old: Tensor | None, rows: Tensor, count: int, decay: float) -> Tensor:
        """``ρ·old + (1 − ρ)·rowsᵀrows/count`` in place (or ``rowsᵀrows/count`` first)."""
        if old is None:
            return rows.T @ rows / count
        return old.addmm_(rows.T, rows, beta=decay, alpha=(1.0 - decay) / count)

    def update_A(self, decay: float) -> None:
        rows = self.input_rows()
        self.A = self._ema(self.A, rows, rows.shape[0], decay)

    def update_G(self, rows: list[Tensor], n: int, decay: float) -> None:
        """``G`` from pre-activation gradient rows (all samples and captures), ``/n`` outputs."""
        if not rows:
            ref = self.params[0]
            rows = [torch.zeros(1, self.out_dim, dtype=ref.dtype, device=ref.device)]
        cat = rows[0] if len(rows) == 1 else torch.cat(rows)
        self.G = self._ema(self.G, cat, n, decay)

    def grad_matrix(self, grads: list[Tensor]) -> Tensor:
        """``M = [∇W | ∇b]`` of shape ``(out, a_dim)``."""
        cols = []
        if self.has_weight:
            w = grads[0]
            cols.append(w.reshape(self.out_dim, -1) if self.conv else w)
        if self.has_bias:
            cols.append(grads[-1].unsqueeze(1))
        return cols[0] if len(cols) == 1 else torch.cat(cols, dim=1)

    def split(self, m: Tensor) -> list[Tensor]:
        """Inverse of :meth:`grad_matrix`."""
        out = []
        if self.has_weight:
            w = m[:, : self.in_dim] if self.has_bias else m
            out.append(w.reshape(self.params[0].shape) if self.conv else w)
        if self.has_bias:
            out.append(m[:, self.in_dim])
        return out

    def invert(self, damping: float) -> None:
        """Recompute the π-corrected damped inverses."""
        assert self.A is not None and self.G is not None
        ta = float(torch.diagonal(self.A).mean())
        tg = float(torch.diagonal(self.G).mean())
        pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 and math.isfinite(ta / tg) else 1.0
        root = math.sqrt(damping)
        top = torch.finfo(self.A.dtype).max
        if not (pi * root < top and root / pi < top):
            raise KFACFactorError(
                f"damping={damping!r} is too large for the {self.A.dtype} factors of module "
                f"'{self.path}' (the π-corrected shifts √λ·π = {pi * root:.3g} and "
                f"√λ/π = {root / pi:.3g} overflow); use a smaller damping"
            )
        self.A_inv = self._spd_inverse(self.A, pi * root, "A", damping)
        self.G_inv = self._spd_inverse(self.G, root / pi, "G", damping)

    def _spd_inverse(self, f: Tensor, shift: float, name: str, damping: float) -> Tensor:
        if not bool(torch.isfinite(f).all()):
            raise KFACFactorError(
                f"K-FAC factor {name} of module '{self.path}' ({type(self.module).__name__}) "
                "contains NaN or inf: the activations or gradients were not finite"
            )
        eye = torch.eye(f.shape[0], dtype=f.dtype, device=f.device)
        damped = f + shift * eye
        chol, info = torch.linalg.cholesky_ex(damped)
        if int(info) != 0:
            low = float(torch.linalg.eigvalsh(damped)[0])
            raise KFACFactorError(
                f"K-FAC factor {name} of module '{self.path}' ({type(self.module).__name__}) "
                f"is not positive definite after damping={damping!r} (smallest eigenvalue "
                f"{low:.3g}); use a larger damping, e.g. 1e-3 or more"
            )
        if shift == 0.0:
            # Undamped, a factor that is singular in exact arithmetic (softmax's G has the
            # null vector 1) can pass the Cholesky after rounding and give an inverse with
            # no correct digit: refuse once κ ≈ (max/min of the Cholesky diagonal)² nears 1/ε.
            d = torch.diagonal(chol).abs()
            kappa = float((d.max() / d.min()) ** 2) if float(d.min()) > 0 else math.inf
            if not kappa * torch.finfo(f.dtype).eps < 1e-2:
                raise KFACFactorError(
                    f"K-FAC factor {name} of module '{self.path}' ({type(self.module).__name__}) "
                    f"is numerically singular with damping={damping!r} (condition number about "
                    f"{kappa:.3g} in {f.dtype}); use a damping > 0, e.g. 1e-3"
                )
        return torch.cholesky_inverse(chol)

    def solve(self, grads: list[Tensor]) -> list[Tensor]:
        return self.split(self.solve_matrix(grads))

    def solve_matrix(self, grads: list[Tensor]) -> Tensor:
        """``(G + …)⁻¹ M (A + …)⁻¹`` in matrix form."""
        assert self.A_inv is not None and self.G_inv is not None
        return self.G_inv @ self.grad_matrix(grads) @ self.A_inv

    def quad_matrix(self, m: Tensor) -> Tensor:
        """``vec(M)ᵀ (G ⊗ A) vec(M) = Σ M ⊙ (G M A)``."""
        assert self.A is not None and self.G is not None
        return (m * (self.G @ m @ self.A)).sum()

    def quad(self, xs: list[Tensor]) -> Tensor:
        return self.quad_matrix(self.grad_matrix(xs))

    def dense(self) -> Tensor:
        """``G ⊗ A`` permuted to the flat order ``[vec W, b]``."""
        assert self.A is not None and self.G is not None
        kron = torch.kron(self.G, self.A)
        idx = torch.arange(self.out_dim * self.a_dim, device=kron.device).reshape(self.out_dim, -1)
        order = []
        if self.has_weight:
            order.append(idx[:, : self.in_dim].reshape(-1))
        if self.has_bias:
            order.append(idx[:, self.in_dim])
        perm = torch.cat(order)
        return kron[perm][:, perm]
