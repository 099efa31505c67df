"""Fitting the critic: regression of V(s) on the λ-returns with Adam over minibatches.

Two interchangeable paths compute the same update:

* :func:`fit_critic_autograd`: any critic module, ``loss.backward()`` and
  ``torch.optim.Adam``;
* :class:`MLPCriticTrainer`: the default MLP critic (``Linear`` layers with
  ``Tanh``/``ReLU`` between them, one output), with the backward pass written
  out by hand and Adam applied to one flat parameter vector.  Per minibatch it
  dispatches about 25 tensor operations instead of the ~150 that autograd and
  ``Adam.step`` need, which is most of the cost at these sizes (sb3-contrib
  spends about 0.6 ms per critic minibatch here).  It is tested against the
  autograd path.

Both draw the minibatch order from the same generator in the same way, so a
run is reproducible whichever path it uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def fast_tanh_(x: Tensor) -> Tensor:
    """In-place ``tanh(x) = 2σ(2x) − 1``: equal to ``torch.tanh`` within ~1e-7 absolute, and
    several times faster on CPU (torch 2.13's ``tanh`` kernel is ~5x slower than its
    ``sigmoid`` on this machine)."""
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def _minibatches(n: int, batch_size: int, epochs: int, gen: torch.Generator) -> list[Tensor]:
    """The index sets of every minibatch of every epoch (a fresh permutation per epoch)."""
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[start : start + batch_size] for start in range(0, n, batch_size))
    return out


def fit_critic_autograd(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    obs: Tensor,
    returns: Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Mean squared error regression with any module and optimiser; returns the mean loss."""
    total, count = torch.zeros(()), 0
    for idx in _minibatches(obs.shape[0], batch_size, epochs, generator):
        pred = critic(obs[idx]).reshape(-1)
        loss = torch.nn.functional.mse_loss(pred, returns[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        count += 1
    return float(total) / max(count, 1)


def supports_fast_path(critic: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``Linear`` (with bias) and ``Tanh``/``ReLU``, one output."""
    if not isinstance(critic, nn.Sequential) or len(critic) == 0:
        return False
    prev_linear = False
    for m in critic:
        if isinstance(m, nn.Linear):
            if m.bias is None or prev_linear:
                return False
            prev_linear = True
        elif isinstance(m, (nn.Tanh, nn.ReLU)) and prev_linear:
            prev_linear = False
        else:
            return False
    last = critic[-1]
    return isinstance(last, nn.Linear) and last.out_features == 1


class MLPCriticTrainer:
    """Adam on an MLP critic with a hand-written backward pass and flat parameters.

    On construction the critic's parameters are moved into one flat buffer
    (the module's ``weight``/``bias`` become views of it), so the module stays
    the single source of truth for values, ``state_dict`` and checkpoints.

    Args:
        critic: A module for which :func:`supports_fast_path` is true.
        lr, betas, eps: Adam's hyperparameters (``torch.optim.Adam``'s defaults).
    """

    def __init__(
        self,
        critic: nn.Sequential,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not supports_fast_path(critic):
            raise ValueError("critic is not a plain MLP; use fit_critic_autograd")
        self.lr, self.betas, self.eps = lr, betas, eps
        params = list(critic.parameters())
        self.flat = torch.cat([p.detach().reshape(-1) for p in params])
        self.grad = torch.zeros_like(self.flat)
        views, grads, start = [], [], 0
        for p in params:
            n = p.numel()
            p.data = self.flat[start : start + n].view_as(p)
            views.append(p.data)
            grads.append(self.grad[start : start + n].view_as(p))
            start += n
        self.layers: list[tuple[Tensor, Tensor, Tensor, Tensor, str | None]] = []
        k = 0
        for m in critic:
            if isinstance(m, nn.Linear):
                self.layers.append((views[k], views[k + 1], grads[k], grads[k + 1], None))
                k += 2
            else:
                w, b, gw, gb, _ = self.layers[-1]
                self.layers[-1] = (w, b, gw, gb, "tanh" if isinstance(m, nn.Tanh) else "relu")
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0

    def _loss_and_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Forward, MSE and its gradient into ``self.grad``; returns the loss."""
        acts = [x]
        h = x
        for w, b, _, _, act in self.layers:
            h = torch.addmm(b, h, w.t())
            if act == "tanh":
                h = fast_tanh_(h)
            elif act == "relu":
                h = h.relu_()
            acts.append(h)
        err = acts[-1].reshape(-1) - y
        loss = err.square().mean()
        d = (err * (2.0 / err.shape[0])).unsqueeze(1)
        for i in range(len(self.layers) - 1, -1, -1):
            w, _, gw, gb, _ = self.layers[i]
            inp = acts[i]
            torch.mm(d.t(), inp, out=gw)
            torch.sum(d, 0, out=gb)
            if i == 0:
                break
            d = d.mm(w)
            prev_act = self.layers[i - 1][4]
            if prev_act == "tanh":
                d = d.mul_(1.0 - inp * inp)
            elif prev_act == "relu":
                d = d.mul_(inp > 0)
        return loss

    def _adam(self) -> None:
        """``torch.optim.Adam``'s update (no weight decay, no amsgrad), on the flat vector."""
        beta1, beta2 = self.betas
        self.steps += 1
        g = self.grad
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    @torch.no_grad()
    def fit(
        self,
        obs: Tensor,
        returns: Tensor,
        *,
        epochs: int,
        batch_size: int,
        generator: torch.Generator,
    ) -> float:
        """``epochs`` passes of minibatch Adam; returns the mean minibatch loss."""
        total, count = torch.zeros(()), 0
        for idx in _minibatches(obs.shape[0], batch_size, epochs, generator):
            total += self._loss_and_grad(obs[idx], returns[idx])
            self._adam()
            count += 1
        return float(total) / max(count, 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "steps": self.steps,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["exp_avg"].shape != self.flat.shape:
            raise ValueError(
                f"critic optimiser state has {state['exp_avg'].numel()} entries, "
                f"the critic {self.flat.numel()}"
            )
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
