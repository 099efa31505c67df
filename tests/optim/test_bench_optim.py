"""The optimiser benchmark runs end to end in its quick setting."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "optim.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_optim", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_reports_every_figure(tmp_path):
    pytest.importorskip("sklearn")
    bench = _load()
    out = bench.run(quick=True, plot=str(tmp_path / "curves.png"))
    json.dumps(out)  # one JSON line
    assert set(out["results"]) == {"ngd_ggn", "kfac", "adam", "sgd"}
    for figures in out["results"].values():
        assert {"lr", "epochs_to_95", "wall_s_to_95", "final_test_acc", "step_ms"} <= set(figures)
        assert figures["final_test_acc"] > 0.8
    assert out["kfac_step_over_adam_step"] > 0
    assert len(out["curves"]["kfac"]) == out["config"]["epochs"]
    assert (tmp_path / "curves.png").stat().st_size > 0
