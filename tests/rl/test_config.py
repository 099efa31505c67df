import pytest
from torch import nn

from natgrad.rl.config import (
    SB3_ALIASES,
    NPGConfig,
    PolicyConfig,
    RolloutConfig,
    RunConfig,
    TRPOConfig,
    concern_classes,
    parse_value,
    split_fields,
)
from natgrad.rl.presets import env_family, preset_env_ids, preset_for


@pytest.mark.parametrize(
    "cls, field, value, message",
    [
        (TRPOConfig, "max_kl", 0.0, "max_kl=0.0; it must be a finite number > 0"),
        (TRPOConfig, "max_kl", float("nan"), "max_kl=nan; it must be a finite number"),
        (TRPOConfig, "gamma", 1.5, r"gamma=1.5; it must be a number in \[0, 1\]"),
        (TRPOConfig, "cg_damping", -0.1, "cg_damping=-0.1"),
        (TRPOConfig, "fisher_subsample", 0.0, "fisher_subsample"),
        (TRPOConfig, "n_steps", 1.5, "n_steps=1.5"),
        (TRPOConfig, "normalize_obs", "yes", "normalize_obs='yes'"),
        (TRPOConfig, "clip_obs", -1.0, "clip_obs=-1.0; it must be a finite number > 0"),
        (TRPOConfig, "line_search_shrink", 1.0, "line_search_shrink"),
        (RolloutConfig, "n_envs", 0, "n_envs=0; it must be an int >= 1"),
        (RolloutConfig, "vec", "threads", "vec='threads'; it must be one of 'sync', 'async'"),
        (RolloutConfig, "workers", 5, r"workers=5; it must be an int in \[0, n_envs=1\]"),
        (RolloutConfig, "step_timeout", 0.0, "step_timeout=0.0"),
        (PolicyConfig, "policy_hidden", (), "policy_hidden"),
        (PolicyConfig, "activation", "gelu", "activation='gelu'"),
        (RunConfig, "total_steps", 0, "total_steps=0"),
        (RunConfig, "tensorboard", "yes", "tensorboard='yes'; it must be of type bool or None"),
    ],
)
def test_invalid_values_name_field_value_and_range(cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})


@pytest.mark.parametrize("algo", ["trpo", "npg"])
def test_every_field_of_every_concern_has_a_docstring(algo):
    for cls in concern_classes(algo).values():
        docs = cls.field_docs()
        for name in cls.field_names():
            assert docs.get(name), f"{cls.__name__}.{name} has no docstring"


def test_field_names_are_unique_across_concerns():
    names = [n for cls in concern_classes("trpo").values() for n in cls.field_names()]
    assert len(names) == len(set(names))


def test_roundtrip_and_unknown_fields():
    cfg = TRPOConfig(max_kl=0.02, n_steps=128)
    assert TRPOConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="did you mean max_kl"):
        TRPOConfig.from_dict({"max_k": 0.1})
    with pytest.raises(ValueError, match="unknown config field"):
        cfg.replace(line_search=3)
    assert cfg.replace(gamma=0.9).gamma == 0.9
    assert "line_search_shrink" not in NPGConfig().to_dict()
    assert PolicyConfig.from_dict(PolicyConfig(policy_hidden=[8]).to_dict()).policy_hidden == (8,)


def test_split_fields_routes_by_name_and_accepts_sb3_names():
    parts = split_fields({"max_kl": 0.1, "n_envs": 4, "log_std_init": -1.0, "seed": 3}, "trpo")
    assert parts == {
        "algorithm": {"max_kl": 0.1},
        "rollout": {"n_envs": 4},
        "policy": {"log_std_init": -1.0},
        "run": {"seed": 3},
    }
    sb3 = split_fields({"learning_rate": 3e-4, "sub_sampling_factor": 4}, "trpo", aliases=True)
    assert sb3["algorithm"] == {"critic_lr": 3e-4, "fisher_subsample": 0.25}
    assert set(SB3_ALIASES.values()) <= set(TRPOConfig.field_names())
    with pytest.raises(ValueError, match="did you mean max_kl"):
        split_fields({"max_k": 1}, "trpo")
    with pytest.raises(ValueError, match="unknown setting 'line_search_shrink' for NPG"):
        split_fields({"line_search_shrink": 0.5}, "npg")


def test_policy_kwargs_in_sb3_form():
    cfg = PolicyConfig.from_policy_kwargs(
        dict(net_arch=dict(pi=[32], vf=[16, 16]), activation_fn=nn.ReLU, log_std_init=-0.5)
    )
    assert (cfg.policy_hidden, cfg.critic_hidden, cfg.activation) == ((32,), (16, 16), "relu")
    assert cfg.log_std_init == -0.5
    assert PolicyConfig.from_policy_kwargs({"net_arch": [8, 8]}).critic_hidden == (8, 8)
    with pytest.raises(ValueError, match="activation_fn.*nn.Tanh or nn.ReLU"):
        PolicyConfig.from_policy_kwargs({"activation_fn": nn.GELU})
    with pytest.raises(ValueError, match="net_arch.*keys \\['qf'\\]"):
        PolicyConfig.from_policy_kwargs({"net_arch": {"qf": [8]}})
    with pytest.raises(ValueError, match="features_extractor_class.*is not supported"):
        PolicyConfig.from_policy_kwargs({"features_extractor_class": object})


def test_parse_value_by_type():
    assert parse_value(TRPOConfig, "max_kl", "0.02") == 0.02
    assert parse_value(RunConfig, "total_steps", "1e5") == 100_000
    assert parse_value(TRPOConfig, "normalize_obs", "true") is True
    assert parse_value(PolicyConfig, "policy_hidden", "128,128") == (128, 128)
    assert parse_value(RunConfig, "tensorboard", "auto") is None
    assert parse_value(RolloutConfig, "step_timeout", "none") is None
    assert parse_value(RolloutConfig, "step_timeout", "2.5") == 2.5
    with pytest.raises(ValueError, match="cannot be read as int"):
        parse_value(RolloutConfig, "n_envs", "two")
    with pytest.raises(ValueError, match="unknown config field"):
        parse_value(TRPOConfig, "n_envs", "2")


def test_presets_cite_sources_and_are_valid():
    for env_id in [*preset_env_ids(), "Acrobot-v1", "Walker2d-v5"]:
        for algo in ("trpo", "npg"):
            values, source = preset_for(env_id, algo)
            assert "rl-baselines3-zoo" in source or "sb3-contrib" in source
            parts = split_fields(values, algo)
            for concern, cls in concern_classes(algo).items():
                cls.from_dict(parts[concern])
    assert set(preset_env_ids()) >= {
        "CartPole-v1",
        "Pendulum-v1",
        "InvertedPendulum-v5",
        "Hopper-v5",
        "HalfCheetah-v5",
    }
    assert env_family("Walker2d-v5") == "mujoco" and env_family("Acrobot-v1") == "classic_control"


def test_npg_presets_lay_their_own_tables_over_trpos(monkeypatch):
    from natgrad.rl import presets

    data = {
        "defaults": {"mujoco": {"source": "zoo", "max_kl": 0.01, "gamma": 0.99}},
        "npg": {"defaults": {"mujoco": {"source": "npg tuning", "max_kl": 0.02}}},
        "envs": {"Hopper-v5": {"source": "hopper", "gamma": 0.995,
                               "npg": {"source": "hopper npg", "max_kl": 0.005}}},
    }  # fmt: skip
    monkeypatch.setattr(presets, "_load", lambda: data)
    trpo, src = preset_for("Hopper-v5")
    assert trpo == {"max_kl": 0.01, "gamma": 0.995} and src == "hopper; zoo"
    npg, src = preset_for("Hopper-v5", "npg")
    assert npg == {"max_kl": 0.005, "gamma": 0.995}
    assert src == "hopper npg; hopper; npg tuning; zoo"
    assert preset_for("Walker2d-v5", "npg")[0] == {"max_kl": 0.02, "gamma": 0.99}
    with pytest.raises(ValueError, match="algo="):
        preset_for("Hopper-v5", "ppo")
