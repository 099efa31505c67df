"""bench/optim_targets.py runs end to end in a tiny setting, so that it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "optim_targets.py"


def test_tiny_benchmark_reports_every_figure(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("mnist1d")
    bench = load_script(BENCH, "bench_optim_targets")
    cache = tmp_path / "cache.json"
    kwargs = dict(quick=True, epochs=1, max_train=256, timing_steps=2, cache=str(cache))
    out = bench.run(**kwargs, plot=str(tmp_path / "c.png"))
    json.dumps(out)
    assert set(out["tasks"]) == {"mnist1d_cnn", "digits_mlp"}
    for res in out["tasks"].values():
        assert set(res["arms"]) == {"sgd", "adam", "kfac", "ngd_ggn", "ngvi"}
        for arm in res["arms"].values():
            assert {"lr", "epochs_to_target", "wall_s_to_target", "final_test_acc"} <= set(arm)
            assert len(arm["curve_acc"]) == len(arm["curve_time_s"]) == 1
            assert "est_s_to_target" in arm
        assert res["kfac_step_over_adam"] > 0 and res["kfac_every_step_over_adam"] > 0
        assert set(res["targets"]) == {"kfac_fewer_epochs_than_adam", "kfac_step_le_2x_adam"}
    assert (tmp_path / "c.png").stat().st_size > 0
    # a second run reuses every arm from the cache
    again = bench.run(**kwargs, arms=["adam"], tasks=["digits_mlp"])
    cached = json.loads(cache.read_text())
    assert (
        again["tasks"]["digits_mlp"]["arms"]["adam"] == out["tasks"]["digits_mlp"]["arms"]["adam"]
    )
    assert len(cached) == 10


def test_a_diverging_run_is_recorded_not_raised():
    bench = load_script(BENCH, "bench_optim_targets")
    task = bench.TASKS["digits_mlp"]
    data = task.load()

    def make(model, lr, n_train=0):
        def step(x, y):
            raise ValueError("b contains NaN or inf")

        return step

    arm = bench.Arm("broken", make, [1.0], [1.0])
    r = bench.train(task, arm, 1.0, 0, data, epochs=3)
    assert r["acc"] == [0.0, 0.0, 0.0] and r["epochs_to_target"] is None
    assert r["diverged"]["epoch"] == 1
