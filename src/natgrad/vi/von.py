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
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["VariationalOnlineNewton"]


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
        self._pending: dict[Tensor, dict[str, Tensor]] = {}
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

    def _std(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        hess = self._param_state(p, group)["hess"]
        return torch.rsqrt(group["ess"] * (hess + group["weight_decay"]))

    @torch.no_grad()
    def posterior_std(self) -> list[Tensor]:
        """σ of each parameter, ``1/√(ess (h + δ))``, in ``param_groups`` order."""
        return [self._std(p, g).clone() for g in self.param_groups for p in g["params"]]

    def _sampled(self) -> list[tuple[Tensor, dict[str, Any]]]:
        """The parameters that are sampled (those with ``requires_grad``) and their groups."""
        return [(p, g) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _draw(self, params: list[Tensor]) -> list[Tensor]:
        if self.antithetic and self._last_noise is not None:
            noise, self._last_noise = [-e for e in self._last_noise], None
            return noise
        noise = [
            torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
            for p in params
        ]
        if self.antithetic:
            self._last_noise = noise
        return noise

    @contextlib.contextmanager
    def sampled_params(self, train: bool = False) -> Iterator[None]:
        """Put one posterior sample ``m + σ ε`` into the parameters for the block.

        Args:
            train: Read the gradients that the block left in ``.grad`` and keep them
                for the next :meth:`step` (the block must call ``backward()``).

        The means are restored on exit, also when the block raises (the sample is
        then not kept).
        """
        sampled = self._sampled()
        noise = self._draw([p for p, _ in sampled])
        saved: list[tuple[Tensor, Tensor, Tensor, dict[str, Any]]] = []
        with torch.no_grad():
            for (p, group), eps in zip(sampled, noise, strict=True):
                saved.append((p, p.detach().clone(), eps, group))
                p.add_(self._std(p, group) * eps)
        try:
            yield
            if train:
                self._collect(saved)
        finally:
            with torch.no_grad():
                for p, mean, _, _ in saved:
                    p.copy_(mean)

    def _collect(self, saved: list[tuple[Tensor, Tensor, Tensor, dict[str, Any]]]) -> None:
        if all(p.grad is None for p, *_ in saved):
            raise RuntimeError(
                "sampled_params(train=True) found no gradients: call loss.backward() inside "
                "the block (and zero the gradients before it)"
            )
        with torch.no_grad():
            for p, _, eps, group in saved:
                if p.grad is None:  # not used by this loss: no information, as in torch.optim
                    continue
                grad = p.grad.detach()
                acc = self._pending.get(p)
                if acc is None:
                    acc = self._pending[p] = {"g": torch.zeros_like(p), "h": torch.zeros_like(p)}
                    acc["n"] = torch.zeros((), dtype=torch.int64)
                acc["g"].add_(grad)
                acc["h"].add_(grad * eps / self._std(p, group))
                acc["n"] += 1
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
            A step whose gradients are not finite is skipped (the posterior is left as
            it was) and counted in ``skipped_steps``.
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
        finite = all(
            bool(torch.isfinite(acc["g"]).all() and torch.isfinite(acc["h"]).all())
            for acc in pending.values()
        )
        if not finite:
            self.skipped_steps += 1
            return loss
        for group in self.param_groups:
            for p in group["params"]:
                acc = pending.get(p)
                if acc is None:  # no gradient in any sample (or added since the draw)
                    continue
                n = int(acc["n"])
                self._update(p, group, acc["g"] / n, acc["h"] / n)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any], g_hat: Tensor, h_hat: Tensor) -> None:
        state = self._param_state(p, group)
        beta1, beta2 = group["betas"]
        delta = group["weight_decay"]
        state["step"] += 1
        exp_avg, hess = state["exp_avg"], state["hess"]
        exp_avg.mul_(beta1).add_(g_hat, alpha=1.0 - beta1)
        diff = hess - h_hat
        correction = diff.square().div_(hess + delta).mul_(0.5 * (1.0 - beta2) ** 2)
        hess.mul_(beta2).add_(h_hat, alpha=1.0 - beta2).add_(correction)
        direction = (exp_avg / (1.0 - beta1 ** state["step"])).add_(p, alpha=delta)
        direction.div_(hess + delta)
        if group["clip_radius"] is not None:
            direction.clamp_(-group["clip_radius"], group["clip_radius"])
        p.add_(direction, alpha=-group["lr"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            self._check_group(group)
        self._pending, self._n_pending, self._last_noise = {}, 0, None
