"""Fisher products through CNN policies, masked policies, and K-FAC's Conv2d blocks (ACKTR)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from natgrad.distributions import Categorical, MultiCategorical
from natgrad.fisher import GGNFisher, KLHessianFisher
from natgrad.params import functional_model
from natgrad.rl import TRPO
from natgrad.rl.envs.layout import obs_layout
from natgrad.rl.policies.extractors import ObsFeatures


def _tiny_cnn_policy(seed: int = 0):
    torch.manual_seed(seed)
    layout = obs_layout(spaces.Box(0, 1, (5, 5, 2), bool))
    net = nn.Sequential(
        ObsFeatures(layout, "small", features_dim=6, extractor_kwargs={"channels": 3}),
        nn.Linear(6, 4),
    ).double()
    params = list(net.parameters())
    f = functional_model(net, params)
    x = torch.rand(7, 50, dtype=torch.float64).round()
    return f, params, x


def _exact_fisher(f, params, x, mask=None) -> torch.Tensor:
    """E_x Σ_a p(a|x) ∇log p(a|x) ∇log p(a|x)ᵀ, by enumerating the actions."""
    dim = sum(p.numel() for p in params)
    total = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(x.shape[0]):
        logits = f(params, x[i : i + 1])[0]
        if mask is not None:
            logits = logits.masked_fill(~mask[i], float("-inf"))
        logp = torch.log_softmax(logits, -1)
        for a in range(logits.shape[0]):
            if mask is not None and not mask[i, a]:
                continue
            g = torch.autograd.grad(logp[a], params, retain_graph=True)
            g = torch.cat([t.reshape(-1) for t in g])
            total += logp[a].exp().detach() * torch.outer(g, g)
    return total / x.shape[0]


def test_ggn_kl_hessian_and_dense_agree_on_a_tiny_cnn(float64):
    f, params, x = _tiny_cnn_policy()

    def fn(ps, batch):
        return Categorical(f(ps, batch))

    exact = _exact_fisher(f, params, x)
    ggn = GGNFisher(fn, params, x).dense()
    klh = KLHessianFisher(fn, params, x).dense()
    torch.testing.assert_close(ggn, exact, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(klh, exact, rtol=1e-9, atol=1e-10)


def test_masked_fisher_is_the_fisher_of_the_legal_only_policy(float64):
    f, params, x = _tiny_cnn_policy(1)
    mask = torch.rand(x.shape[0], 4, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[:, 0] = True

    def masked(ps, batch):
        return Categorical(f(ps, batch).masked_fill(~mask, float("-inf")))

    exact = _exact_fisher(f, params, x, mask)  # the renormalised legal-only distribution
    for cls in (GGNFisher, KLHessianFisher):
        dense = cls(masked, params, x).dense()
        assert torch.isfinite(dense).all()
        torch.testing.assert_close(dense, exact, rtol=1e-9, atol=1e-10)


def test_masked_kl_entropy_and_output_fisher_match_the_legal_only_distribution(float64):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    legal = [0, 2, 3]
    mask = torch.zeros(5, dtype=torch.bool)
    mask[legal] = True
    pa, pb = (
        Categorical(a.masked_fill(~mask, float("-inf"))),
        Categorical(b.masked_fill(~mask, float("-inf"))),
    )
    ra, rb = Categorical(a[:, legal]), Categorical(b[:, legal])
    torch.testing.assert_close(pa.entropy(), ra.entropy())
    torch.testing.assert_close(pa.kl(pb), ra.kl(rb))
    u = torch.randn(6, 5, generator=g)
    (fu,) = pa.fisher_mv([u])
    torch.testing.assert_close(fu[:, legal], ra.fisher_mv([u[:, legal]])[0])
    assert torch.all(fu[:, ~mask] == 0)
    # the same for a MultiDiscrete policy, sub-action by sub-action
    m = MultiCategorical(
        torch.cat([a, b], 1).masked_fill(~torch.cat([mask, mask]), float("-inf")), [5, 5]
    )
    torch.testing.assert_close(m.entropy(), ra.entropy() + rb.entropy())


class ImageEnv(gym.Env):
    """A 6×6 two-channel image; reward for the action matching the lit channel."""

    observation_space = spaces.Box(0, 255, (6, 6, 2), np.uint8)
    action_space = spaces.Discrete(2)

    def _obs(self):
        self.c = int(self.np_random.integers(2))
        img = np.zeros((6, 6, 2), np.uint8)
        img[..., self.c] = 255
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        r = float(int(action) == self.c)
        self.t += 1
        return self._obs(), r, False, self.t >= 16, {}


def test_kfac_steps_use_conv2d_blocks_acktr():
    model = TRPO(ImageEnv, n_steps=128, seed=0, use_preset=False, fisher="kfac")
    kinds = [type(b.module).__name__ for b in model.kfac.blocks]
    assert kinds[:2] == ["Conv2d", "Linear"] and set(kinds) == {"Conv2d", "Linear"}
    first = [p.detach().clone() for p in model.policy.policy_parameters()]
    model.learn(512)
    assert model.metrics["line_search_success"] == 1.0 and model.metrics["kl"] <= 0.01 * 1.0001
    moved = [not torch.equal(a, b) for a, b in zip(first, model.policy.policy_parameters())]
    assert moved[0]  # the convolution's weight is part of the natural step
    model.close()


def test_kfac_factors_from_a_subsample_and_inverses_every_k_updates():
    """fisher_subsample: K-FAC's statistics come from exactly the rows the generator draws;
    kfac_inverse_every: the inverses are recomputed every k factor updates."""
    from natgrad.fisher import subsample_batch
    from natgrad.optim import KFAC
    from natgrad.rl.algos.step import Surrogate

    model = TRPO(ImageEnv, n_steps=64, seed=0, use_preset=False, fisher="kfac",
                 fisher_subsample=0.25, kfac_inverse_every=3)  # fmt: skip
    assert model.kfac.inverse_every == 3
    batch = model._make_batch(model.collect_rollout()[0])
    gen = torch.Generator().manual_seed(5)
    ref = KFAC(model.policy.actor, damping=0.1, factor_decay=0.95, seed=0)
    (sub,) = subsample_batch((batch.obs,), 0.25, torch.Generator().manual_seed(5))
    assert sub.shape[0] == 16
    with ref.capture():
        dist = model.policy.distribution(sub)
    ref.update_factors(dist)
    Surrogate(model.policy, batch, normalize_advantage=True, kfac=model.kfac,
              kfac_subsample=0.25, generator=gen)  # fmt: skip
    for got, want in zip(model.kfac.blocks, ref.blocks):
        assert torch.equal(got.A, want.A)  # the same 16 rows (A does not depend on sampling)
    steps = []
    for _ in range(4):
        problem = Surrogate(model.policy, batch, normalize_advantage=True, kfac=model.kfac,
                            kfac_subsample=0.25, generator=gen)  # fmt: skip
        model.natural_direction(problem)
        steps.append(model.kfac.inverse_step)
    assert steps == [2, 2, 2, 5]  # inverted at update 2, again 3 updates later
    model.learn(128)
    assert np.isfinite(model.metrics["kl"]) and model.metrics["kl"] <= 0.01 * 1.0001
    model.close()
    with pytest.raises(ValueError, match="kfac_inverse_every"):
        TRPO(ImageEnv, n_steps=64, fisher="kfac", kfac_inverse_every=0, use_preset=False)


def test_kfac_with_an_unsupported_module_gives_the_existing_error():
    actor = nn.Sequential(nn.Flatten(), nn.Linear(72, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"K-FAC cannot factor module '2' \(LayerNorm\)"):
        TRPO(ImageEnv, n_steps=32, seed=0, use_preset=False, fisher="kfac", actor=actor)


def test_ggn_trpo_on_images_learns_the_easy_task():
    model = TRPO(ImageEnv, n_steps=256, seed=0, use_preset=False)
    model.learn(2048)
    assert model.metrics["episode_return"] > 10  # 16 steps an episode; 8 by chance
    model.close()
