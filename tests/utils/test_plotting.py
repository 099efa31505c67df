import json
import struct

import numpy as np
import pytest

from natgrad.utils.logger import RunLogger
from natgrad.utils.plotting import interpolate_mean_std, plot_learning_curves, run_label

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fake_run(path, seed, *, config=None, n=30, stride=1000):
    rng = np.random.default_rng(seed)
    with RunLogger(path, tensorboard=False) as log:
        for i in range(n):
            env_steps = (i + 1) * stride + seed * 7  # seeds sample slightly different x
            log.log(i, {"env_steps": env_steps, "episode_return": i + rng.normal()})
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_interpolate_mean_std_numerics():
    curves = [
        ([0.0, 10.0], [0.0, 10.0]),  # y = x on [0, 10]
        ([10.0, 0.0, 5.0], [30.0, 10.0, 20.0]),  # unsorted; y = 2x + 10 on [0, 10]
        ([0.0, 4.0, 12.0], [np.nan, 4.0, 12.0]),  # NaN pair dropped; y = x on [4, 12]
    ]
    grid, mean, std = interpolate_mean_std(curves, num_points=5)
    np.testing.assert_allclose(grid, [4.0, 5.5, 7.0, 8.5, 10.0])  # common range [4, 10]
    expected = np.stack([grid, 2 * grid + 10, grid])
    np.testing.assert_allclose(mean, expected.mean(axis=0))
    np.testing.assert_allclose(std, expected.std(axis=0))
    assert mean[0] == pytest.approx((4.0 + 18.0 + 4.0) / 3)
    assert std[0] == pytest.approx(np.sqrt(((4 - 26 / 3) ** 2 * 2 + (18 - 26 / 3) ** 2) / 3))


def test_interpolate_single_curve_and_errors():
    grid, mean, std = interpolate_mean_std([([1, 2, 3], [2, 4, 6])], num_points=3)
    np.testing.assert_allclose(mean, [2, 4, 6])
    np.testing.assert_allclose(std, 0.0)
    grid, mean, _ = interpolate_mean_std([([5.0], [1.0]), ([5.0], [3.0])])
    assert grid.tolist() == [5.0] and mean.tolist() == [2.0]
    with pytest.raises(ValueError, match="do not overlap"):
        interpolate_mean_std([([0, 1], [0, 1]), ([2, 3], [0, 1])])
    with pytest.raises(ValueError, match="no finite"):
        interpolate_mean_std([([np.nan], [1.0])])
    with pytest.raises(ValueError, match="must match"):
        interpolate_mean_std([([1, 2], [1.0])])
    with pytest.raises(ValueError, match="empty"):
        interpolate_mean_std([])


def test_run_label(tmp_path):
    run = tmp_path / "cartpole_seed3"
    run.mkdir()
    assert run_label(run) == "cartpole"
    (run / "config.json").write_text(json.dumps({"env_id": "CartPole-v1", "algo": "trpo"}))
    assert run_label(run) == "CartPole-v1 / trpo"
    (run / "config.json").write_text(json.dumps({"env": {"id": "Pendulum-v1"}}))
    assert run_label(run) == "Pendulum-v1"
    (run / "config.json").write_text("{not json")
    assert run_label(run) == "cartpole"


def test_plot_learning_curves_writes_png(tmp_path):
    cfg = {"env_id": "CartPole-v1", "algo": "trpo"}
    runs = [_fake_run(tmp_path / f"trpo_s{s}", s, config=cfg) for s in range(3)]
    runs.append(_fake_run(tmp_path / "npg_seed0", 9))
    out = plot_learning_curves(runs, tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (700, 450)
    assert len(data) > 10_000


def test_plot_custom_columns_and_label(tmp_path):
    runs = [_fake_run(tmp_path / f"r{s}", s) for s in range(2)]
    out = plot_learning_curves(
        runs, tmp_path / "o.png", x="step", y="env_steps", label="all", title="T"
    )
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_bad_input(tmp_path):
    run = _fake_run(tmp_path / "good", 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' has no progress.csv"):
        plot_learning_curves([run, empty], tmp_path / "o.png")
    with pytest.raises(
        ValueError,
        match=r"column 'reward' .* available columns: step, wall_time, env_steps, episode_return",
    ):
        plot_learning_curves([run], tmp_path / "o.png", y="reward")
    with pytest.raises(ValueError, match="run_dirs is empty"):
        plot_learning_curves([], tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
