"""The benchmarks are imported and run in quick mode so that they cannot rot."""

from pathlib import Path

import pytest

from helpers import load_script

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name):
    return load_script(BENCH / f"{name}.py", f"bench_{name}")


def test_fvp_bench_runs_and_reports_ratios():
    import torch

    threads = torch.get_num_threads()
    try:
        out = load("fvp").run(quick=True)
    finally:
        torch.set_num_threads(threads)
    for hidden in ("h64", "h256"):
        for method in ("ggn", "kl_hessian", "ggn_own_forward", "ggn_func"):
            ratio = out[hidden][method]["amortised_over_grad"]
            assert ratio > 0 and ratio == pytest.approx(ratio)  # finite, positive
    assert set(out["summary"]) >= {"ggn_amortised_over_grad_64", "target_ggn_64"}
    assert out["cnn"]["ggn"]["amortised_over_grad"] > 0
    assert out["kfac"]["h64"]["natgrad_kfac"]["over_grad"] > 0
    assert "kfac_pytorch" in out["skipped"]  # not on PyPI: said so, not silently dropped
    # Each peer arm either ran on every model or is skipped with its reason.
    for peer in ("curvlinops_ggn", "nngeometry_fim"):
        ran = [peer in out[model] for model in ("h64", "h256", "cnn")]
        assert all(ran) != (peer in out["skipped"]), (peer, ran, out["skipped"])
        if all(ran):
            assert out["summary"]["cnn_natgrad_over_fastest_peer"] > 0


def test_fvp_bench_skips_missing_peers(monkeypatch):
    import sys

    import torch

    monkeypatch.setitem(sys.modules, "curvlinops", None)
    monkeypatch.setitem(sys.modules, "nngeometry", None)
    threads = torch.get_num_threads()
    try:
        fvp = load("fvp")
        out = fvp.measure_cnn(batch=8, repeats=1, skipped=(skipped := {}))
    finally:
        torch.set_num_threads(threads)
    assert "curvlinops_ggn" not in out and "nngeometry_fim" not in out
    assert "curvlinops-for-pytorch" in skipped["curvlinops_ggn"] and "nngeometry_fim" in skipped
    assert out["ggn"]["amortised_over_grad"] > 0


def test_vi_deep_bench_runs_tiny(tmp_path):
    import json

    import torch

    threads = torch.get_num_threads()
    vi = load("vi_deep")
    try:
        res = vi.run(["digits"], ["adam", "natgrad", "ivon"], seeds=(0,), epochs={"digits": 1},
                     quick=True, out=tmp_path / "r.jsonl")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    methods = {"adam", "natgrad"} | ({"ivon"} if "ivon" not in res["skipped"] else set())
    assert set(res["digits"]) == methods
    for m in methods:
        r = res["digits"][m]
        assert 0 < r["accuracy"] <= 1 and r["nll"] > 0 and 0 <= r["ece"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"tune", "test", "choice"}
    # A second run reuses every run in the file: it only records its choices again.
    try:
        again = vi.run(["digits"], ["adam"], seeds=(0,), epochs={"digits": 1}, quick=True,
                       out=tmp_path / "r.jsonl")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert again["digits"]["adam"]["nll"] == res["digits"]["adam"]["nll"]
    new = (tmp_path / "r.jsonl").read_text().splitlines()[len(rows) :]
    assert [json.loads(line)["phase"] for line in new] == ["choice"]
    lines = vi.table(tmp_path / "r.jsonl").splitlines()
    assert len(lines) == 2 + len(methods) and lines[2].startswith("| digits | ")


def test_smoke_vs_sb3_bench_runs_in_quick_mode():
    import torch

    threads = torch.get_num_threads()
    try:
        (res,) = load("vs_sb3").run(quick=True)
    finally:
        torch.set_num_threads(threads)
    assert res["env"] == "CartPole-v1" and res["n_envs"] == 1
    for cores in ("1core", "2core"):
        for key in ("speedup", "update_time_ratio", "fraction_of_raw_rate"):
            assert res[f"{key}_{cores}"] > 0
    for arm in ("sb3_1", "sb3_2", "natgrad_1core", "natgrad_2core"):
        assert res[arm]["update_s"] > 0


def test_learning_benches_run_in_a_tiny_setting(tmp_path):
    res = load("learning").run(["CartPole-v1"], seeds=1, steps=256, out=str(tmp_path), jobs=1)
    assert res[0]["env"] == "CartPole-v1" and 0 < res[0]["eval_mean"] <= 500
    ref = load("sb3_learning").run_seed("Pendulum-v1", seed=0, steps=256)
    assert -2000 < ref["eval_mean"] <= 0


def test_smoke_vec_envs_bench_runs_in_quick_mode():
    out = load("vec_envs").run(quick=True)
    (res,) = out["rollouts"]
    assert set(res["rollout_steps_per_s"]) == {
        "natgrad",
        "gymnasium",
        "natgrad_async",
        "gymnasium_async",
    }
    assert res["natgrad_over_gymnasium"] > 0
    assert set(out["normalisation"]["CartPole-v1"]["us_per_step"]) == {
        "none",
        "natgrad",
        "gymnasium",
    }


def test_minatar_bench_runs_each_arm_and_the_speed_probe(tmp_path):
    pytest.importorskip("minatar")
    bench = load("minatar_trpo")
    out = tmp_path / "runs.jsonl"
    res = bench.learn(["MinAtar/Breakout-v1"], seeds=1, steps=128, jobs=1, out=out, n_steps=64)
    assert sorted(r["arm"] for r in res) == ["natgrad_ggn", "natgrad_kfac", "sb3"]
    assert all(r["curve"] and r["curve"][-1][0] >= 128 for r in res)
    summary = bench.summarise(out)["MinAtar/Breakout-v1 @ 128"]
    assert set(summary) == {"natgrad_ggn", "natgrad_kfac", "sb3"}
    assert bench.plot(out, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    speed = bench.speed(repeats=1, n_steps=64)
    assert speed["speedup_ggn"] > 0 and speed["kfac_step_over_grad"] > 0
    assert speed["sampler_us_per_step"] > 0
