"""The GGN Fisher of an MLP, linearised by hand.

For the common policy network — an ``nn.Sequential`` of ``nn.Linear`` layers
with ``Tanh`` or ``ReLU`` between them — the Jacobian-vector and
vector-Jacobian products are a few matrix products with the activations of one
forward pass: ``J v`` propagates ``δz = h dWᵀ + db + δh Wᵀ`` forwards and
``Jᵀ u`` propagates ``u W`` backwards, each scaled by the activation's
derivative.  Doing that directly, instead of by autograd's double backward,
halves the cost of a Fisher product at the sizes TRPO uses (the matrix
products are the same; the bookkeeping is not).  :class:`MLPFisher` is tested
against :class:`~natgrad.fisher.GGNFisher`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from natgrad.distributions import Distribution
from natgrad.fisher.base import FisherOperator, _check_damping, check_parts, finite_product
from natgrad.mlp import mlp_spec
from natgrad.params import flatten, unflatten


def supports_mlp_fisher(module: nn.Module) -> bool:
    """True for a plain MLP (see :func:`natgrad.mlp.mlp_spec`, the one check)."""
    return mlp_spec(module) is not None


def _tanh(x: Tensor) -> Tensor:
    return torch.sigmoid(2.0 * x).mul_(2.0).sub_(1.0)  # = tanh, faster on CPU (see rl.policies)


class MLPFisher(FisherOperator):
    """``F v = Jᵀ F_out J v / N`` for ``dist = make_dist(mlp(x)[, log_std])``, by hand.

    Args:
        mlp: A module for which :func:`supports_mlp_fisher` is true.
        inputs: The batch ``x``, shape ``(N, in_features)``.
        make_dist: Builds the output distribution from the MLP's output; for a
            Gaussian with a state-independent ``log_std`` it must use ``log_std``.
        log_std: The state-independent log σ parameter, appended to the parameters
            (its Jacobian is the identity, broadcast over the batch), or None.
        damping: λ in ``F + λI``.
        with_latent: Call ``make_dist(output, latent=z)`` with z the input of the last layer
            (gSDE's features z, seen without gradient); ``log_std`` is then the
            ``(k, d)`` exploration matrix, broadcast over the batch the same way.

    The parameters are ``list(mlp.parameters())`` followed by ``log_std``.

    Raises:
        ValueError: an unsupported ``mlp``; ``inputs`` empty, non-finite or of the
            wrong shape/dtype; bad ``damping``; or outputs the distribution refuses.
    """

    def __init__(
        self,
        mlp: nn.Sequential,
        inputs: Tensor,
        make_dist: Callable[[Tensor], Distribution],
        *,
        log_std: Tensor | None = None,
        damping: float = 0.0,
        with_latent: bool = False,
    ) -> None:
        spec = mlp_spec(mlp)
        if spec is None:
            raise ValueError(
                "mlp must be an nn.Sequential of Linear layers (with bias) and Tanh/ReLU; "
                "use GGNFisher for other models"
            )
        self.params = list(mlp.parameters()) + ([log_std] if log_std is not None else [])
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.damping = _check_damping(damping, self.dtype)
        if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.dtype != self.dtype:
            got = (tuple(inputs.shape), inputs.dtype) if isinstance(inputs, Tensor) else inputs
            raise ValueError(
                f"inputs must be a (N, in_features) tensor of dtype {self.dtype}, got {got}"
            )
        first = spec.layers[0].linear.in_features
        if inputs.shape[1] != first:
            raise ValueError(
                f"inputs has {inputs.shape[1]} features but the first layer takes {first}"
            )
        if inputs.shape[0] == 0:
            raise ValueError(
                "inputs is an empty batch (0 rows); the Fisher is an average over the batch "
                "and needs at least one row"
            )
        if not bool(torch.isfinite(inputs).all()):
            raise ValueError("inputs contains NaN or inf")
        self.has_log_std = log_std is not None
        self.layers: list[tuple[Tensor, Tensor]] = []
        self.acts: list[Tensor] = []  # the input of each linear layer
        self.derivs: list[Tensor | None] = []  # activation derivative after each layer
        with torch.no_grad():
            h = inputs
            for layer in spec.layers:
                w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
                self.layers.append((w, b))
                self.acts.append(h)
                z = torch.addmm(b, h, w.t())
                if layer.activation == "tanh":
                    h = _tanh(z)
                    self.derivs.append(1.0 - h * h)
                elif layer.activation == "relu":
                    h = z.relu()
                    self.derivs.append((z > 0).to(z.dtype))
                else:
                    h = z
                    self.derivs.append(None)
            dist = make_dist(h, latent=self.acts[-1]) if with_latent else make_dist(h)  # type: ignore[call-arg]
            self.dist = dist.detach()
        self.n = inputs.shape[0]

    def jvp(self, vs: list[Tensor]) -> tuple[Tensor, ...]:
        """The change of the distribution's parameters along ``v`` (one finite tensor each)."""
        return tuple(map(finite_product, self._jvp(check_parts("vs", vs, self.params))))

    def vjp(self, cots: tuple[Tensor, ...]) -> list[Tensor]:
        """Pull finite output-space cotangents back to the parameters."""
        return [
            finite_product(g) for g in self._vjp(tuple(check_parts("cots", cots, self.dist.params)))
        ]

    def _jvp(self, vs: list[Tensor]) -> tuple[Tensor, ...]:
        t: Tensor | None = None
        for k, ((w, _), h, d) in enumerate(zip(self.layers, self.acts, self.derivs, strict=True)):
            z = torch.addmm(vs[2 * k + 1], h, vs[2 * k].t())
            if t is not None:
                z.addmm_(t, w.t())
            t = z.mul_(d) if d is not None else z
        assert t is not None  # at least one layer (checked in __init__)
        if self.has_log_std:  # the same log σ (vector or gSDE matrix) for every row
            return (t, vs[-1].expand(self.dist.params[1].shape))
        return (t,)

    def _vjp(self, cots: tuple[Tensor, ...]) -> list[Tensor]:
        u = cots[0]
        grads: list[Tensor] = []
        for k in range(len(self.layers) - 1, -1, -1):
            w, _ = self.layers[k]
            grads.append(u.sum(0))
            grads.append(u.t().mm(self.acts[k]))
            if k > 0:
                u = u.mm(w)
                d = self.derivs[k - 1]
                if d is not None:
                    u.mul_(d)
        out = grads[::-1]
        if self.has_log_std:
            out.append(cots[1].sum(0))
        return out

    def _mv(self, v: Tensor) -> Tensor:
        tangents = self._jvp(unflatten(v, self.params, "v"))
        scale = 1.0 / self.n
        cots = tuple(c * scale for c in self.dist.fisher_mv_unchecked(tangents))
        return flatten(self._vjp(cots))
