"""Image and Dict observations: layout, encoding, normalisation, extractors, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from natgrad.rl import TRPO, PolicyConfig
from natgrad.rl.envs.layout import obs_layout
from natgrad.rl.envs.spaces import ObsEncoder
from natgrad.rl.policies.actor_critic import ActorCritic, TorchSampler, _CopiedActor
from natgrad.rl.policies.extractors import NatureCNN, ObsFeatures, SmallCNN
from natgrad.rl.rollout.normalize import ObsNormalizer

GRID = spaces.Box(0, 1, (6, 6, 3), bool)  # channel-last, MinAtar-like


class DictEnv(gym.Env):
    """An image, a vector and a Discrete; reward for action 1 when the vector's first entry > 0."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "board": spaces.Box(0, 255, (2, 6, 6), np.uint8),
                "vec": spaces.Box(-1, 1, (3,), np.float32),
                "turn": spaces.Discrete(2),
            }
        )
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> dict:
        return {
            "board": self.np_random.integers(0, 256, (2, 6, 6), dtype=np.uint8),
            "vec": self.np_random.uniform(-1, 1, 3).astype(np.float32),
            "turn": int(self.t % 2),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.last = self._obs()
        return self.last, {}

    def step(self, action):
        self.t += 1
        r = float(int(action) == int(self.last["vec"][0] > 0))
        self.last = self._obs()
        return self.last, r, False, self.t >= 20, {}


def test_layout_detects_image_axes_and_dict_parts():
    assert obs_layout(GRID).parts[0].image_shape == (3, 6, 6)
    assert obs_layout(GRID).parts[0].channel_last
    chw = obs_layout(spaces.Box(0, 255, (4, 84, 84), np.uint8)).parts[0]
    assert (chw.image_shape, chw.channel_last, chw.scale) == ((4, 84, 84), False, 1 / 255)
    assert obs_layout(spaces.Box(0, 255, (9, 9), np.uint8)).parts[0].image_shape == (1, 9, 9)
    assert obs_layout(spaces.Box(-1, 1, (3, 4, 5))).parts[0].kind == "vector"  # float: no image
    layout = obs_layout(DictEnv().observation_space)
    assert [(p.key, p.kind, p.offset, p.size) for p in layout.parts] == [  # gymnasium sorts keys
        ("board", "image", 0, 72), ("turn", "onehot", 72, 2), ("vec", "vector", 74, 3)
    ]  # fmt: skip
    mask = layout.normalize_mask()
    assert not mask[:72].any() and mask[72:].all()


def test_encoder_concatenates_dict_keys():
    env = DictEnv()
    obs, _ = env.reset(seed=0)
    batch = {k: np.asarray(v)[None] for k, v in obs.items()}
    x = ObsEncoder(env.observation_space)(batch)
    assert x.shape == (1, 77) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :72], obs["board"].reshape(-1))
    np.testing.assert_array_equal(x[0, 72:74], [1.0, 0.0])
    np.testing.assert_array_equal(x[0, 74:], obs["vec"])


def test_normalisation_skips_image_entries():
    norm = ObsNormalizer((5,), clip=1.0, mask=np.array([False, False, True, True, True]))
    data = np.array([[200.0, 0.0, 1.0, 2.0, 3.0], [10.0, 255.0, 3.0, 2.0, -1.0]])
    norm.update(data)
    out = norm.normalize(data)
    np.testing.assert_array_equal(out[:, :2], data[:, :2])  # untouched, unclipped
    assert np.abs(out[:, 2:]).max() <= 1.0 and out[0, 2] < 0


def test_extractor_is_chosen_by_size_and_transposes_once():
    small = ObsFeatures(obs_layout(GRID))
    assert isinstance(small.extractors[0], SmallCNN)
    big = ObsFeatures(obs_layout(spaces.Box(0, 255, (4, 36, 40), np.uint8)))
    assert isinstance(big.extractors[0], NatureCNN) and big.features_dim == 512
    x = torch.rand(3, 6, 6, 3).round()
    out = small(x.reshape(3, -1))
    torch.testing.assert_close(out, small.extractors[0](x.permute(0, 3, 1, 2)))


def test_policy_kwargs_pick_the_extractor_sb3_style():
    cfg = PolicyConfig.from_policy_kwargs(
        dict(features_extractor_class=SmallCNN, features_extractor_kwargs=dict(features_dim=32))
    )
    assert (cfg.features_extractor, cfg.features_dim) == ("small", 32)
    with pytest.raises(ValueError, match="share nothing"):
        PolicyConfig.from_policy_kwargs(dict(share_features_extractor=True))
    with pytest.raises(ValueError, match="features_extractor"):
        PolicyConfig(features_extractor="resnet")


class TinyExtractor(nn.Module):
    """An SB3-style extractor: Class(observation_space, features_dim)."""

    def __init__(self, observation_space: gym.Space, features_dim: int = 5) -> None:
        super().__init__()
        self.features_dim = features_dim
        self.net = nn.Linear(int(np.prod(observation_space["board"].shape)), features_dim)

    def forward(self, obs: dict) -> torch.Tensor:
        assert obs["board"].shape[1:] == (2, 6, 6) and float(obs["board"].max()) <= 1.0
        return torch.relu(self.net(obs["board"].flatten(1)))


def test_dict_env_trains_predicts_and_reloads(tmp_path):
    for kwargs in ({}, {"features_extractor_class": TinyExtractor}):
        model = TRPO(DictEnv, n_steps=64, seed=0, use_preset=False, policy_kwargs=kwargs,
                     normalize_obs=True)  # fmt: skip
        model.learn(128)
        assert np.isfinite(model.metrics["kl"]) and model.metrics["line_search_success"] == 1
        obs, _ = DictEnv().reset(seed=3)
        action, _ = model.predict(obs, deterministic=True)
        assert action in (0, 1)
        path = model.save(tmp_path / f"m{len(kwargs)}.pt")
        again = TRPO.load(path, env=DictEnv)
        assert again.predict(obs, deterministic=True)[0] == action
        with pytest.raises(ValueError, match="dict with keys"):
            model.predict(obs["board"])
        model.close()
        again.close()


def test_numpy_cnn_sampler_matches_the_torch_forward():
    for space in (GRID, spaces.Box(0, 255, (3, 6, 6), np.uint8)):
        ac = ActorCritic(108, spaces.Discrete(4), observation_space=space)
        fast = ac.sampler()
        assert type(fast).__name__ == "NumpyMLPSampler"
        ref = TorchSampler(_CopiedActor(ac.actor), "categorical", 4)
        x = np.random.default_rng(0).integers(0, 2, (16, 108)).astype(np.float32)
        x *= 255 if space.dtype == np.uint8 else 1
        np.testing.assert_allclose(fast.params(x), ref.params(x), atol=1e-5)
        slow = ActorCritic(108, spaces.Discrete(4), observation_space=space, fast_paths=False)
        assert isinstance(slow.sampler(), TorchSampler)


# --- bad input (issue 10, item 6) ------------------------------------------------------------
def test_image_too_small_for_nature_cnn_names_shape_and_option():
    with pytest.raises(
        ValueError, match=r"4×10×10 is too small for NatureCNN.*features_extractor='small'"
    ):
        ObsFeatures(obs_layout(spaces.Box(0, 1, (10, 10, 4), bool)), "nature")
    with pytest.raises(ValueError, match=r"2×2 is too small for the small CNN.*'flatten'"):
        ObsFeatures(obs_layout(spaces.Box(0, 255, (1, 2, 2), np.uint8)), "small")


def test_one_d_uint8_is_refused_with_the_option_to_set():
    space = spaces.Box(0, 255, (16,), np.uint8)
    with pytest.raises(ValueError, match=r"uint8 of shape \(16,\).*features_extractor='flatten'"):
        ActorCritic(16, spaces.Discrete(2), observation_space=space)
    ok = ActorCritic(16, spaces.Discrete(2), observation_space=space, features_extractor="flatten")
    assert ok.actor(torch.full((1, 16), 255.0)).shape == (1, 2)


def test_cnn_named_for_a_space_without_images_is_refused():
    with pytest.raises(ValueError, match="needs an image observation"):
        ActorCritic(3, spaces.Discrete(2), observation_space=spaces.Box(-1, 1, (3,)),
                    features_extractor="nature")  # fmt: skip
    with pytest.raises(ValueError, match="cannot be imported"):
        ActorCritic(108, spaces.Discrete(2), observation_space=GRID,
                    features_extractor="no_such_mod:Net")  # fmt: skip
