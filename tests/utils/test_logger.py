import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from natgrad.utils.logger import RunLogger, read_progress


def _scalars(run_dir, tag):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_log_writes_csv_and_tensorboard(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 4):
            log.log(step, {"env_steps": 100 * step, "episode_return": np.float32(step / 2)})
    data = read_progress(tmp_path)
    assert list(data) == ["step", "wall_time", "env_steps", "episode_return"]
    assert data["step"].dtype == np.int64
    np.testing.assert_array_equal(data["step"], [1, 2, 3])
    np.testing.assert_array_equal(data["env_steps"], [100.0, 200.0, 300.0])
    np.testing.assert_array_equal(data["episode_return"], [0.5, 1.0, 1.5])
    assert np.all(np.diff(data["wall_time"]) >= 0)
    assert _scalars(tmp_path, "episode_return") == [(1, 0.5), (2, 1.0), (3, 1.5)]


def test_values_round_trip_exactly_and_nan(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"x": 0.1 + 0.2, "y": math.nan, "z": -math.inf})
    data = read_progress(tmp_path / "progress.csv")
    assert data["x"][0] == 0.1 + 0.2
    assert math.isnan(data["y"][0]) and data["z"][0] == -math.inf
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_new_keys_rewrite_header_and_missing_keys_are_nan(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"a": 1.0})
        log.log(2, {"a": 2.0, "b": 20.0})
        log.log(3, {"b": 30.0})
        assert log.fieldnames == ["step", "wall_time", "a", "b"]
    data = read_progress(tmp_path)
    np.testing.assert_array_equal(data["a"], [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(data["b"], [np.nan, 20.0, 30.0])
    assert not list(tmp_path.glob(".progress.csv.*"))  # no temp litter


def test_fixed_fieldnames_reject_unknown_keys(tmp_path):
    with RunLogger(tmp_path, tensorboard=False, fieldnames=["a", "b"]) as log:
        log.log(1, {"b": 2.0})
        with pytest.raises(ValueError, match=r"\['c'\].*fieldnames"):
            log.log(2, {"c": 1.0})
    data = read_progress(tmp_path)
    assert list(data) == ["step", "wall_time", "a", "b"]
    assert math.isnan(data["a"][0]) and data["b"][0] == 2.0


def test_bad_input_raises_value_error(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="step must be an integer"):
            log.log(1.5, {"a": 1.0})
        with pytest.raises(ValueError, match="'a' must be a real number"):
            log.log(1, {"a": "x"})
        with pytest.raises(ValueError, match="reserved"):
            log.log(1, {"step": 1})
    with pytest.raises(ValueError, match="reserved"):
        RunLogger(tmp_path / "other", fieldnames=["wall_time"])
    with pytest.raises(RuntimeError, match="closed"):
        log.log(2, {"a": 1.0})


def test_existing_run_requires_resume(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"a": 1.0})
    with pytest.raises(ValueError, match="resume=True"):
        RunLogger(tmp_path)
    assert read_progress(tmp_path)["a"].tolist() == [1.0]


def test_resume_truncates_rows_after_checkpoint(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 11):
            log.log(step, {"r": float(step)})
    # Crash after step 10; the last checkpoint was taken at step 6.
    with RunLogger(tmp_path, resume=True) as log:
        assert log.truncate_after(6) == 4
        for step in range(7, 9):
            log.log(step, {"r": 100.0 + step, "new": 1.0})
    data = read_progress(tmp_path)
    np.testing.assert_array_equal(data["step"], [1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(data["r"], [1, 2, 3, 4, 5, 6, 107, 108])
    np.testing.assert_array_equal(data["new"], [np.nan] * 6 + [1.0, 1.0])
    # TensorBoard hides the stale steps 7..10 of the first session.
    assert _scalars(tmp_path, "r") == [(s, float(s)) for s in range(1, 7)] + [
        (7, 107.0),
        (8, 108.0),
    ]


def test_partial_last_line_is_ignored_and_dropped_on_resume(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"a": 1.0, "b": 2.0})
        log.log(2, {"a": 3.0, "b": 4.0})
    with open(tmp_path / "progress.csv", "a") as f:
        f.write("3,12345.0,5.")  # crash mid-row
    assert read_progress(tmp_path)["step"].tolist() == [1, 2]
    with RunLogger(tmp_path, tensorboard=False, resume=True) as log:
        log.log(3, {"a": 5.0, "b": 6.0})
    data = read_progress(tmp_path)
    assert data["step"].tolist() == [1, 2, 3]
    assert data["b"].tolist() == [2.0, 4.0, 6.0]


def test_resume_rejects_foreign_csv(tmp_path):
    (tmp_path / "progress.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not written by RunLogger"):
        RunLogger(tmp_path, resume=True)


def test_read_progress_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no progress.csv"):
        read_progress(tmp_path)
