"""The critic's regression on the λ-returns, by whichever path the critic allows.

* a plain MLP critic (:func:`natgrad.mlp.mlp_spec`) gets :class:`MLPCriticTrainer`:
  numpy forward, hand-written backward and Adam (0.1 ms against 0.6 ms per minibatch of
  128 for autograd plus ``torch.optim.Adam``; see :mod:`natgrad.rl.algos.critic`), and,
  with ``critic_worker``, a helper process that fits while the policy step runs;
* any other critic gets autograd and ``torch.optim.Adam``.

All draw the minibatch order from the agent's generator at the same point, so the
results do not depend on the path (to float32 rounding) or on the helper (bit for bit).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from natgrad.rl.algos.critic import MLPCriticTrainer, fit_critic_autograd
from natgrad.rl.algos.critic_worker import CriticWorker, PendingFit
from natgrad.rl.policies.actor_critic import ActorCritic

__all__ = ["CriticFitter"]


class CriticFitter:
    """Fits ``policy.critic`` by minibatch Adam on MSE.

    Args:
        policy: The actor-critic (its ``critic_spec`` picks the path).
        lr: Adam's learning rate.
        epochs, batch_size: Passes over the batch and the minibatch size.
        helper: Run the fast path in a helper process (needs two cores and a critic that
            shares no parameter with the actor).
    """

    def __init__(
        self, policy: ActorCritic, lr: float, *, epochs: int, batch_size: int, helper: bool
    ) -> None:
        self.policy, self.epochs, self.batch_size = policy, epochs, batch_size
        self.trainer: MLPCriticTrainer | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.worker: CriticWorker | None = None
        if policy.critic_spec is not None:
            self.trainer = MLPCriticTrainer(policy.critic, lr=lr)  # type: ignore[arg-type]
            actor_ids = {id(p) for p in policy.policy_parameters()}
            shared = any(id(p) in actor_ids for p in policy.critic_parameters())
            if helper and (os.cpu_count() or 1) >= 2 and not shared:
                self.worker = CriticWorker(self.trainer)
        else:
            self.optimizer = torch.optim.Adam(policy.critic_parameters(), lr=lr, foreach=True)

    def start(self, obs: Tensor, returns: Tensor, generator: torch.Generator) -> PendingFit:
        """Start a fit; ``result()`` of the returned object is the mean minibatch loss.

        With a helper process the fit runs there from now on; otherwise it runs when
        ``result()`` is called. The minibatch order is drawn now in either case.
        """
        epochs, size = self.epochs, self.batch_size
        if self.worker is not None:
            return self.worker.fit_async(
                obs, returns, epochs=epochs, batch_size=size, generator=generator
            )
        if self.trainer is not None:
            fit = self.trainer.fit_later
            return PendingFit(
                compute=fit(obs, returns, epochs=epochs, batch_size=size, generator=generator)
            )
        critic, opt = self.policy.critic, self.optimizer
        assert opt is not None  # one of the two is set in __init__
        return PendingFit(
            compute=lambda: fit_critic_autograd(
                critic, opt, obs, returns, epochs=epochs, batch_size=size, generator=generator
            )
        )

    def state_dict(self) -> dict[str, Any]:
        """The optimiser state; refused when a helper died mid-fit."""
        if self.worker is not None and self.worker.poisoned is not None:
            raise RuntimeError(f"cannot save: {self.worker.poisoned}")
        opt = self.trainer if self.trainer is not None else self.optimizer
        return opt.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        opt = self.trainer if self.trainer is not None else self.optimizer
        opt.load_state_dict(state)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
