import pytest

from natgrad.rl.config import NPGConfig, TRPOConfig, parse_value
from natgrad.rl.presets import env_family, preset_env_ids, preset_for


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_kl", 0.0, "max_kl=0.0; it must be a finite number > 0"),
        ("gamma", 1.5, r"gamma=1.5; it must be a number in \[0, 1\]"),
        ("n_envs", 0, "n_envs=0; it must be an int >= 1"),
        ("cg_damping", -0.1, "cg_damping=-0.1"),
        ("fisher_subsample", 0.0, "fisher_subsample"),
        ("vec", "threads", "vec='threads'; it must be one of 'sync', 'async', 'ray'"),
        ("policy_hidden", (), "policy_hidden"),
        ("n_steps", 1.5, "n_steps=1.5"),
        ("normalize_obs", "yes", "normalize_obs='yes'"),
        ("workers", 5, r"workers=5; it must be an int in \[0, n_envs=1\]"),
        ("line_search_shrink", 1.0, "line_search_shrink"),
    ],
)
def test_invalid_values_name_field_value_and_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        TRPOConfig(**{field: value})


def test_every_field_has_a_docstring():
    for cls in (TRPOConfig, NPGConfig):
        docs = cls.field_docs()
        for name in cls().to_dict():
            assert docs.get(name), f"{cls.__name__}.{name} has no docstring"


def test_roundtrip_and_unknown_fields():
    cfg = TRPOConfig(max_kl=0.02, policy_hidden=(32,))
    assert TRPOConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="did you mean max_kl"):
        TRPOConfig.from_dict({"max_k": 0.1})
    with pytest.raises(ValueError, match="unknown config field"):
        cfg.replace(line_search=3)
    assert cfg.replace(seed=3).seed == 3
    assert "line_search_shrink" not in NPGConfig().to_dict()


def test_parse_value_by_type():
    assert parse_value(TRPOConfig, "max_kl", "0.02") == 0.02
    assert parse_value(TRPOConfig, "total_steps", "1e5") == 100_000
    assert parse_value(TRPOConfig, "normalize_obs", "true") is True
    assert parse_value(TRPOConfig, "policy_hidden", "128,128") == (128, 128)
    with pytest.raises(ValueError, match="cannot be read as int"):
        parse_value(TRPOConfig, "n_envs", "two")


def test_presets_cite_sources_and_are_valid():
    for env_id in [*preset_env_ids(), "Acrobot-v1", "Walker2d-v5"]:
        values, source = preset_for(env_id)
        assert "rl-baselines3-zoo" in source or "sb3-contrib" in source
        TRPOConfig.from_dict({**values, "env_id": env_id})
    assert set(preset_env_ids()) >= {
        "CartPole-v1",
        "Pendulum-v1",
        "InvertedPendulum-v5",
        "Hopper-v5",
        "HalfCheetah-v5",
    }
    assert env_family("Walker2d-v5") == "mujoco" and env_family("Acrobot-v1") == "classic_control"
