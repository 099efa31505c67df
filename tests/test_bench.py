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
    assert sorted(r["arm"] for r in res) == [
        "natgrad_ggn", "natgrad_kfac", "natgrad_kfac_amortised", "sb3",
    ]  # fmt: skip
    assert all(r["curve"] and r["curve"][-1][0] >= 128 for r in res)
    summary = bench.summarise(out)["MinAtar/Breakout-v1 @ 128"]
    assert set(summary) == {"natgrad_ggn", "natgrad_kfac", "natgrad_kfac_amortised", "sb3"}
    assert bench.plot(out, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    speed = bench.speed(repeats=1, n_steps=64)
    assert speed["speedup_ggn"] > 0 and speed["kfac_step_over_grad"] > 0
    assert speed["speedup_kfac_amortised"] > 0 and speed["kfac_amortised_step_over_grad"] > 0
    assert speed["sampler_us_per_step"] > 0


def test_suite_runs_resumes_and_renders_in_a_tiny_setting(tmp_path):
    suite = load("suite")
    results, out = tmp_path / "suite.jsonl", tmp_path / "out"
    jobs = suite.make_jobs(["InvertedPendulum-v5"], ["trpo", "npg"], [0], 512, [])
    jobs += suite.make_jobs(["InvertedPendulum-v5"], ["trpo"], [1], 512, ["max_kl=0.02"])
    new = suite.run_suite(jobs, results, out, n_jobs=2, pause_file=None, poll=0.2)
    assert len(new) == 3 and len(suite.read_results(results)) == 3
    for line in new:
        assert 0 < line["eval"]["mean"] <= 1000 and len(line["eval"]["returns"]) == 10
        assert line["env_steps"] >= 512 and line["wall_s"] > 0 and line["steps_per_s"] > 0
        assert line["curve"]["env_steps"][-1] == line["env_steps"] and line["commit"]
        assert suite.flat_config(line["config"])["seed"] == line["seed"]
    assert (
        new[-1]["overrides"] == {"max_kl": "0.02"}
        and suite.flat_config(new[-1]["config"])["max_kl"] == 0.02
    )
    # a second call finds every run done and starts nothing
    assert suite.run_suite(jobs, results, out, n_jobs=2, pause_file=None, poll=0.2) == []
    # runs finished on disk whose lines were lost (the scheduler died) are collected, not rerun
    lines = results.read_text()
    results.unlink()
    queue = tmp_path / "queue.txt"
    queue.write_text("--envs InvertedPendulum-v5 --algos trpo,npg --seeds 0 --steps 512\n"
                     "# a comment\n--envs InvertedPendulum-v5 --algos trpo --seeds 1 --steps 512 "
                     "--set max_kl=0.02\n")  # fmt: skip
    assert len(suite.read_queue(queue)) == 3
    adopted = suite.run_suite([], results, out, n_jobs=2, pause_file=None, poll=0.2, queue=queue)
    assert sorted(x["eval"]["mean"] for x in adopted) == sorted(x["eval"]["mean"] for x in new)
    assert all(x["commit"] == new[0]["commit"] for x in adopted)
    results.write_text(lines)
    report = load("suite_report")
    doc, plot = tmp_path / "results.md", tmp_path / "suite.png"
    text = report.render(
        suite.read_results(results), suite.ROOT / "src", steps=512, doc=doc, plot=plot
    )
    assert "| InvertedPendulum |" in text and plot.stat().st_size > 0 and doc.read_text() == text
    row = next(s for s in text.splitlines() if s.startswith("| InvertedPendulum |"))
    assert (
        row.count("(1)") == 2
    )  # TRPO and NPG at the preset, one seed each; the variant is left out
    assert "max_kl=0.02" in report.summary(suite.read_results(results))


def test_suite_rejects_bad_job_specs():
    suite = load("suite")
    with pytest.raises(ValueError, match="unknown algorithm"):
        suite.make_jobs(["Hopper-v5"], ["ppo"], [0], 100, [])
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        suite.make_jobs(["Hopper-v5"], ["trpo"], [0], 100, ["max_kl"])
    assert suite.parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_time_to_return_runs_both_arms_side_by_side(tmp_path):
    suite = load("suite")  # puts bench/ on sys.path for the imports below
    ttr = load("time_to_return")
    src, commit = suite.pin_sources(suite.ROOT, tmp_path)
    line = ttr.run_pair("InvertedPendulum-v5", 0, 2048, tmp_path, src, commit, level=3.0)
    for arm in ("natgrad", "sb3"):
        assert line[arm]["wall_s_to_level"] > 0 and line[arm]["env_steps_to_level"] <= 2048
    assert line["ratio"] > 0 and line["suite_line"]["first_reach"]["time_to"]["level"] == 3.0


def test_env_scaling_bench_measures_and_models_in_a_tiny_setting():
    bench = load("env_scaling")
    res = bench.measure("Pendulum-v1", repeats=1, iterations=2, n_envs=2, n_steps=64, raw_steps=500)
    assert res["fraction_of_raw"] > 0 and res["t_collect_us"] > 0 and res["policy_step_s"] > 0
    rates = [bench.model(res, k, "local", 2048 * max(8, k - 2)) for k in (2, 8, 32, 128)]
    assert all(r > 0 for r in rates) and rates[-1] >= rates[0]  # more cores, no slower
    assert bench.model(res, 32, "ray", 2048 * 30) > 0
    with pytest.raises(ValueError, match="backend"):
        bench.model(res, 8, "mpi", 2048)
