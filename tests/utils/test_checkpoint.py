import hashlib
import os

import numpy as np
import pytest
import torch

from natgrad.utils import checkpoint as ckpt_mod
from natgrad.utils.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
)


def _state(step=10, **extra):
    return {
        "step": step,
        "env_id": "CartPole-v1",
        "algo": "trpo",
        "obs_shape": (4,),
        "action_shape": torch.Size([]),
        "policy": {"w": torch.arange(6.0).reshape(2, 3)},
        **extra,
    }


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_and_expected_fields(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "sub" / "ckpt.pt")
    loaded = load_checkpoint(
        path,
        expected={"env_id": "CartPole-v1", "obs_shape": [4], "action_shape": ()},
        required=["policy"],
    )
    assert loaded["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert loaded["step"] == 10
    torch.testing.assert_close(loaded["policy"]["w"], torch.arange(6.0).reshape(2, 3))
    assert sorted(os.listdir(tmp_path / "sub")) == ["ckpt.pt"]


def test_save_checkpoint_validates_state(tmp_path):
    with pytest.raises(ValueError, match=r"state\['step'\]"):
        save_checkpoint({"x": 1}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"state\['step'\]"):
        save_checkpoint({"step": 1.5}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="format_version"):
        save_checkpoint({"step": 1, "format_version": 99}, tmp_path / "a.pt")
    assert save_checkpoint({"step": np.int64(3)}, tmp_path / "a.pt").exists()
    assert load_checkpoint(tmp_path / "a.pt")["step"] == 3


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_raises_and_is_unchanged(tmp_path, damage):
    path = save_checkpoint(_state(), tmp_path / "ckpt.pt")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    else:
        path.write_bytes(b"")
    before = _digest(path)
    with pytest.raises(ValueError, match="corrupt.*nothing was changed") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert _digest(path) == before


def test_mismatch_names_field_and_both_values(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "ckpt.pt")
    before = _digest(path)
    with pytest.raises(ValueError, match=r"'env_id'.*'CartPole-v1'.*'Pendulum-v1'"):
        load_checkpoint(path, expected={"env_id": "Pendulum-v1", "algo": "trpo"})
    with pytest.raises(ValueError, match=r"'obs_shape'.*\(4,\).*\(3,\)"):
        load_checkpoint(path, expected={"obs_shape": (3,)})
    with pytest.raises(ValueError, match="has no field 'seed'"):
        load_checkpoint(path, expected={"seed": 0})
    assert _digest(path) == before


def test_missing_keys_and_versions(tmp_path):
    path = save_atomic({"policy": 1}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"lacks required keys \['format_version', 'step'\]"):
        load_checkpoint(path)
    save_atomic([1, 2], path)
    with pytest.raises(ValueError, match="holds a list"):
        load_checkpoint(path)
    save_atomic({"format_version": CHECKPOINT_FORMAT_VERSION + 1, "step": 0}, path)
    with pytest.raises(ValueError, match="upgrade natgrad"):
        load_checkpoint(path)
    save_checkpoint({"step": 0}, path)
    with pytest.raises(ValueError, match=r"lacks required keys \['optim'\]"):
        load_checkpoint(path, required=["optim"])


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(_state(step=5), tmp_path / "ckpt.pt")
    before = _digest(path)
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # write everything, then die
        f.write(b"partial")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(step=6), path)

    def half_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(step=7), path)

    assert _digest(path) == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp litter
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 5
