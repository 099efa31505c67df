r"""A drop-in variational optimiser: natural-gradient VI of a mean-field Gaussian posterior.

:class:`VariationalOnlineNewton` keeps ``q(θ) = N(m, diag σ²)`` over the weights of
a network and moves it by the improved variational online Newton (IVON) update
(Shen et al. 2024, Algorithm 1), the deep-network form of the Gaussian Bayesian
learning rule (Khan & Rue 2023; VON/VOGN: Khan et al. 2018, Osawa et al. 2019).

Objective
---------
With per-example loss ``ℓ̄(θ) = (1/N) Σᵢ −log p(yᵢ | xᵢ, θ)`` (the mean loss a
training loop computes), an effective sample size ``λ`` (``ess``, normally the
number of training examples ``N``) and the prior ``p(θ) = N(0, 1/(λδ))``
(``δ`` = ``weight_decay``), natural-gradient VI minimises

    λ E_q[ℓ̄(θ)] + KL(q ‖ p).

In the precision parameterisation ``σ² = 1 / (λ (h + δ))`` the natural-gradient step
(see ``docs/vi.md``) is a Newton step on the expected loss with ``h`` an average of
the expected Hessian diagonal ``E_q[∇²ℓ̄]``. One step, for each weight:

    θ_k = m + σ ε_k,  ε_k ~ N(0, I)                   (k = 1..K, ``mc_samples``)
    ĝ = mean_k ∇ℓ̄(θ_k)                                (Bonnet: E_q[∇ℓ̄])
    ĥ = mean_k ∇ℓ̄(θ_k) ⊙ ε_k / σ                      (Price/Stein: E_q[∇²ℓ̄] diag)
    g ← β₁ g + (1 − β₁) ĝ
    h ← β₂ h + (1 − β₂) ĥ + ½ (1 − β₂)² (h − ĥ)² / (h + δ)
    m ← m − α · clip((g / (1 − β₁ᵗ) + δ m) / (h + δ), ±ξ)
    σ ← 1 / √(λ (h + δ))

The last term of the ``h`` update (a Riemannian-gradient correction) keeps the
precision positive: with ``p = h + δ > 0`` and ``u = (1 − β₂)(ĥ − h) / p`` the
update is ``p ← p (1 + u + u²/2) ≥ p / 2``. ``ĥ`` needs no per-example gradients
and no second backward: it is the reparameterisation (Stein's lemma) estimate
``E[∇²f]ᵢᵢ = E[(θ − m)ᵢ ∂ᵢf(θ)] / σᵢ²``.

``antithetic=True`` evaluates the samples in pairs ``ε, −ε``. For a quadratic loss
the pair cancels the term of ``ĥ`` that the gradient at the mean contributes,
which is most of its noise early in training; it costs two gradients per pair.

The learning rate ``α`` is a fraction of a Newton step on the expected loss (typical
values 0.05 to 0.5). ``ivon-opt``'s default ``rescale_lr=True`` multiplies its
``lr`` by ``hess_init + weight_decay``; its ``lr`` is our ``α / (h₀ + δ)``.

Two ways to use it:

* ``opt.step(closure)``, with the usual closure that zeroes the gradients,
  computes the loss, calls ``backward()`` and returns the loss. The optimiser
  calls it ``mc_samples`` times, each at fresh sampled weights.
* ``with opt.sampled_params(train=True): loss.backward()`` once or more, then
  ``opt.step()`` (the ``ivon-opt`` loop).

Prediction: at the mean (the model's own weights between steps), or with
``with opt.sampled_params(): model(x)`` for one posterior sample, or
:func:`natgrad.vi.posterior_predictive` for a Monte-Carlo average.

Example:
    >>> import torch
    >>> from natgrad.vi import VariationalOnlineNewton
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> opt = VariationalOnlineNewton(model.parameters(), lr=0.5, ess=64, hess_init=1.0)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(300):
    ...     _ = opt.step(closure)
    >>> torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=0.1)
    True

References:
    Y. Shen et al., "Variational Learning is Effective for Large Deep Networks",
    ICML 2024. M. E. Khan et al., "Fast and Scalable Bayesian Deep Learning by
    Weight-Perturbation in Adam", ICML 2018. K. Osawa et al., "Practical Deep
    Learning with Bayesian Principles", NeurIPS 2019. M. E. Khan and H. Rue,
    "The Bayesian Learning Rule", JMLR 2023.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["VariationalOnlineNewton"]

# one sample of a group: its parameters, their means, the noise ε and σ
_Sample = tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]


def _check_positive(name: str, value: Any, *, allow_zero: bool = False, finite: bool = True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value >= 0 if allow_zero else value > 0) and (math.isfinite(value) or not finite)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


class VariationalOnlineNewton(Optimizer):
    """Mean-field Gaussian variational posterior over the parameters, IVON update.

    Args:
        params: Parameters or parameter groups (``torch.optim`` conventions); each
            group may set its own ``lr``, ``ess``, ``weight_decay``, ``betas``,
            ``hess_init`` and ``clip_radius``.
        lr: α, the fraction of a Newton step on the expected loss.
        ess: λ, effective sample size: the number of training examples for a loss
            averaged over examples (smaller values give a wider posterior).
        betas: ``(β₁, β₂)``: EMA rates of the gradient and the Hessian diagonal.
        weight_decay: δ; the prior is ``N(0, 1/(ess · δ))`` (``ess · δ`` is the prior
            precision).
        hess_init: h₀ > 0, the initial Hessian diagonal, so the initial posterior
            standard deviation is ``1/√(ess (h₀ + δ))``.
        mc_samples: K, weight samples per ``step(closure)`` (closure calls).
        antithetic: Draw the samples in pairs ``ε, −ε`` (``mc_samples`` must be even).
        clip_radius: ξ, elementwise bound of the preconditioned step, or ``None``.
        generator: Random source of the weight noise (default: torch's global one).

    Raises:
        ValueError: for a hyperparameter out of range (the message names it).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        ess: float,
        *,
        betas: tuple[float, float] = (0.9, 0.99999),
        weight_decay: float = 1e-4,
        hess_init: float = 1.0,
        mc_samples: int = 1,
        antithetic: bool = False,
        clip_radius: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be an int >= 1, got {mc_samples!r}")
        if antithetic and mc_samples % 2:
            raise ValueError(
                f"antithetic=True draws samples in pairs, so mc_samples must be even; "
                f"got {mc_samples} (use {mc_samples + 1})"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        defaults = dict(
            lr=lr,
            ess=ess,
            betas=betas,
            weight_decay=weight_decay,
            hess_init=hess_init,
            clip_radius=clip_radius,
        )
        self.mc_samples = mc_samples
        self.antithetic = bool(antithetic)
        self.generator = generator
        self._pending: dict[Tensor, dict[str, Any]] = {}  # sums of ĝ, ĥ and their count
        self._n_pending = 0
        self._last_noise: list[Tensor] | None = None  # ε of the previous draw (antithetic)
        self.skipped_steps = 0
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        _check_positive("lr", group["lr"])
        _check_positive("ess", group["ess"])
        _check_positive("weight_decay", group["weight_decay"], allow_zero=True)
        _check_positive("hess_init", group["hess_init"])
        betas = group["betas"]
        if not (
            isinstance(betas, (tuple, list))
            and len(betas) == 2
            and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if group["clip_radius"] is not None:
            _check_positive("clip_radius", group["clip_radius"], finite=False)
        for p in group["params"]:
            if not p.is_floating_point():
                raise TypeError(f"parameters must be floating point, got one of dtype {p.dtype}")

    # ----------------------------------------------------------------- posterior
    def _param_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hess"] = torch.full_like(p, float(group["hess_init"]))
        return state

    def _std(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """σ = (ess (h + δ))^(-1/2) for ``params`` of ``group``."""
        hess = [self._param_state(p, group)["hess"] for p in params]
        std = torch._foreach_add(hess, group["weight_decay"])
        torch._foreach_mul_(std, float(group["ess"]))
        torch._foreach_rsqrt_(std)
        return list(std)

    @torch.no_grad()
    def posterior_std(self) -> list[Tensor]:
        """σ of each parameter, ``1/√(ess (h + δ))``, in ``param_groups`` order."""
        return [s for g in self.param_groups for s in self._std(g, list(g["params"]))]

    def _draw(self, params: list[Tensor]) -> list[Tensor]:
        """Standard normal noise shaped like ``params`` (or the mirror of the last draw)."""
        if self.antithetic and self._last_noise is not None:
            noise, self._last_noise = list(torch._foreach_neg(self._last_noise)), None
            return noise
        numels = [p.numel() for p in params]
        dtypes = {p.dtype for p in params}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
        flat = torch.randn(sum(numels), generator=self.generator, dtype=dtype)
        noise = [e.view_as(p).to(p) for e, p in zip(flat.split(numels), params, strict=True)]
        if self.antithetic:
            self._last_noise = noise
        return noise

    @contextlib.contextmanager
    def sampled_params(self, train: bool = False) -> Iterator[None]:
        """Put one posterior sample ``m + σ ε`` into the parameters for the block.

        Args:
            train: Read the gradients that the block left in ``.grad`` and keep them
                for the next :meth:`step` (the block must call ``backward()``).

        Only parameters with ``requires_grad`` are sampled. The means are restored on
        exit, also when the block raises (the sample is then not kept).
        """
        groups = [
            (group, [p for p in group["params"] if p.requires_grad]) for group in self.param_groups
        ]
        noise = iter(self._draw([p for _, params in groups for p in params]))
        record: list[_Sample] = []
        with torch.no_grad():
            for group, params in groups:
                if not params:
                    continue
                eps = [next(noise) for _ in params]
                std = self._std(group, params)
                means = [p.detach().clone() for p in params]
                torch._foreach_addcmul_(params, std, eps)
                record.append((params, means, eps, std))
        try:
            yield
            if train:
                self._collect(record)
        finally:
            with torch.no_grad():
                for params, means, _, _ in record:
                    torch._foreach_copy_(params, means)

    def _collect(self, record: list[_Sample]) -> None:
        """Add one sample's ``∇ℓ`` and ``∇ℓ ⊙ ε / σ`` to the pending sums."""
        if all(p.grad is None for params, *_ in record for p in params):
            raise RuntimeError(
                "sampled_params(train=True) found no gradients: call loss.backward() inside "
                "the block (and zero the gradients before it)"
            )
        with torch.no_grad():
            for params, _, eps, std in record:
                # a parameter this loss did not use carries no information, as in torch.optim
                keep = [i for i, p in enumerate(params) if p.grad is not None]
                if not keep:
                    continue
                grads = [cast(Tensor, params[i].grad) for i in keep]
                h = torch._foreach_mul(grads, [eps[i] for i in keep])
                torch._foreach_div_(h, [std[i] for i in keep])
                fresh = [params[i] not in self._pending for i in keep]
                if any(fresh):  # the first sample since the last step starts the sums
                    new = [j for j, f in enumerate(fresh) if f]
                    copies = torch._foreach_mul([grads[j] for j in new], 1.0)
                    for j, g in zip(new, copies, strict=True):
                        self._pending[params[keep[j]]] = {"g": g, "h": h[j], "n": 0}
                if not all(fresh):
                    old = [j for j, f in enumerate(fresh) if not f]
                    accs = [self._pending[params[keep[j]]] for j in old]
                    torch._foreach_add_([a["g"] for a in accs], [grads[j] for j in old])
                    torch._foreach_add_([a["h"] for a in accs], [h[j] for j in old])
                for i in keep:
                    self._pending[params[i]]["n"] += 1
        self._n_pending += 1

    # ---------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One natural-gradient update of the posterior.

        Args:
            closure: Zeroes the gradients, computes the (mean) loss, calls
                ``backward()`` and returns the loss. It is called ``mc_samples`` times,
                each at new sampled weights. Without it, the samples gathered by
                ``sampled_params(train=True)`` since the last step are used.

        Returns:
            The closure's loss averaged over the samples (``None`` without a closure).
            A step whose gradients are not finite (or so large that their norm
            overflows) is skipped, leaving the posterior as it was, and counted in
            ``skipped_steps``.
        """
        loss = None
        if closure is not None:
            losses = []
            for _ in range(self.mc_samples):
                with torch.enable_grad(), self.sampled_params(train=True):
                    losses.append(torch.as_tensor(closure()).detach())
            loss = torch.stack(losses).mean()
        if self._n_pending == 0:
            raise RuntimeError(
                "step() found no gradient samples: pass a closure, or call loss.backward() "
                "inside `with opt.sampled_params(train=True):` before step()"
            )
        pending = self._pending
        self._pending, self._n_pending, self._last_noise = {}, 0, None
        norms = list(torch._foreach_norm([a[k] for a in pending.values() for k in ("g", "h")]))
        if len({n.dtype for n in norms}) > 1:
            norms = [n.double() for n in norms]
        if not bool(torch.isfinite(torch.stack(norms)).all()):
            self.skipped_steps += 1
            return loss
        for group in self.param_groups:
            # parameters without a gradient in any sample (or added since the draw) stay
            params = [p for p in group["params"] if p in pending]
            if not params:
                continue
            accs = [pending[p] for p in params]
            counts = [float(a["n"]) for a in accs]
            g_hat = torch._foreach_div([a["g"] for a in accs], counts)
            h_hat = torch._foreach_div([a["h"] for a in accs], counts)
            self._update_group(group, params, list(g_hat), list(h_hat))
        return loss

    def _update_group(
        self, group: dict[str, Any], params: list[Tensor], g_hat: list[Tensor], h_hat: list[Tensor]
    ) -> None:
        """The IVON update of ``params`` from the sample means ``ĝ``, ``ĥ`` (see the module)."""
        beta1, beta2 = group["betas"]
        delta = group["weight_decay"]
        states = [self._param_state(p, group) for p in params]
        for state in states:
            state["step"] += 1
        exp_avg = [s["exp_avg"] for s in states]
        hess = [s["hess"] for s in states]
        torch._foreach_lerp_(exp_avg, g_hat, 1.0 - beta1)  # g ← β₁ g + (1 − β₁) ĝ
        # ½ (1 − β₂)² (h − ĥ)² / (h + δ), with the old h
        correction = torch._foreach_sub(hess, h_hat)
        torch._foreach_mul_(correction, correction)
        torch._foreach_div_(correction, torch._foreach_add(hess, delta))
        torch._foreach_mul_(correction, 0.5 * (1.0 - beta2) ** 2)
        torch._foreach_lerp_(hess, h_hat, 1.0 - beta2)
        torch._foreach_add_(hess, correction)
        # m ← m − α clip((g / (1 − β₁ᵗ) + δ m) / (h + δ))
        direction = torch._foreach_div(exp_avg, [1.0 - beta1 ** s["step"] for s in states])
        torch._foreach_add_(direction, params, alpha=delta)
        torch._foreach_div_(direction, torch._foreach_add(hess, delta))
        radius = group["clip_radius"]
        if radius is not None:
            torch._foreach_clamp_min_(direction, -radius)
            torch._foreach_clamp_max_(direction, radius)
        torch._foreach_add_(params, direction, alpha=-group["lr"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            self._check_group(group)
        self._pending, self._n_pending, self._last_noise = {}, 0, None
