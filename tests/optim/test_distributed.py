"""Data parallelism: 2 gloo processes with half the batch each equal one process with all of it.

One spawn (``torch.multiprocessing.spawn``, a free local port) runs every
scenario of ``ddp_worker`` on 2 ranks; the references are computed here, in
one process, on the whole batch.  Everything is float64 and compared at 1e-6.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from optim import ddp_worker as w

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    # One spawn per test session, shared by the xdist workers (pytest-xdist's recipe:
    # the workers' temporary directories share the session's parent directory).
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "ddp_ranks"
    with FileLock(str(root / "ddp_ranks.lock")):
        if not (out / "done").exists():
            out.mkdir(exist_ok=True)
            w.spawn(str(out))
            (out / "done").touch()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _close(a, b, tol=1e-6):
    return all(torch.allclose(x, y, atol=tol, rtol=tol) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("kind", ["kfac", "diag"])
@pytest.mark.parametrize("fisher", ["expectation", "empirical"])
def test_two_ranks_equal_one_process_on_the_whole_batch(ranks, float64, kind, fisher):
    ref = w.train_preconditioned(kind, fisher)
    for res in ranks:
        got = res[f"{kind}_{fisher}"]
        for step in range(w.STEPS):
            assert _close(got["grads"][step], ref["grads"][step]), (kind, fisher, step)
        assert got["scales"] == pytest.approx(ref["scales"], rel=1e-6)
        assert _close(got["params"], ref["params"])
    # the KL clip bound at least once, so the scale is compared where it matters
    assert min(ref["scales"]) < 1.0


def test_sampled_factors_agree_across_ranks_and_A_matches_one_process(ranks, float64):
    ref = w.train_preconditioned("kfac", "true")
    a, b = ranks[0]["kfac_true"], ranks[1]["kfac_true"]
    assert _close(a["A"], b["A"], 0.0) and _close(a["G"], b["G"], 0.0)
    assert _close(a["params"], b["params"], 0.0)
    assert _close(a["first_A"], ref["first_A"])  # the inputs are not sampled
    assert not _close(a["G"], ref["G"])  # each rank draws its own targets
    assert not _close(a["grads"][0], ref["grads"][0])


def test_inverses_spread_over_ranks_give_the_same_steps(ranks, float64):
    ref = w.train_preconditioned("kfac", "expectation")
    for res in ranks:
        got = res["kfac_kaisa"]
        for step in range(w.STEPS):
            assert _close(got["grads"][step], ref["grads"][step])


def test_a_failed_inverse_on_its_owner_is_raised_on_every_rank(ranks):
    owner = [r for r in ranks if "K-FAC factor A of module '3' (Linear)" in r["err_inverse"]]
    other = [r for r in ranks if "on the rank that inverts it" in r["err_inverse"]]
    assert len(owner) == 1 and len(other) == 1
    # undamped, every rank refuses (module 5's G, the softmax's Fisher, is singular)
    assert all("damping=0.0" in r["err_undamped"] for r in ranks)


@pytest.mark.parametrize("fisher", ["ggn", "kl_hessian", "empirical"])
def test_natural_gradient_cg_two_ranks_equal_one_process(ranks, float64, fisher):
    """Gradients and Fisher products averaged over ranks; the KL-radius step too."""
    ref = w.train_natural_gradient(fisher=fisher)
    for res in ranks:
        assert _close(res[f"ngd_{fisher}"], ref)


def test_preconditioner_made_before_init_process_group_is_refused(ranks):
    for res in ranks:
        assert "made for a world size of 1 but steps in one of 2" in res["err_world"]


def test_gradients_not_averaged_over_ranks_are_refused(ranks):
    for res in ranks:
        assert "gradients differ between the 2 ranks" in res["err_not_averaged"]
        assert "DistributedDataParallel" in res["err_not_averaged"]


def test_ranks_with_different_models_are_refused(ranks):
    for res in ranks:
        assert "the ranks disagree on the preconditioned layers" in res["err_layout"]


def test_natural_gradient_kfac_under_distributed_is_refused(ranks):
    for res in ranks:
        assert "use fisher='ggn'" in res["err_ngd_kfac"]


def test_owners_put_the_largest_jobs_on_the_least_loaded_rank():
    from natgrad.optim._distributed import owners

    assert owners([8.0, 1.0, 7.0, 2.0], 2) == [0, 0, 1, 1]  # loads 9 and 9
    assert owners([1.0, 1.0, 1.0], 1) == [0, 0, 0]
    assert owners([5.0, 5.0], 3) == [0, 1]


@pytest.mark.slow  # a second spawn of 2 processes (~10 s of CPU)
def test_kaisa_bench_runs_tiny(monkeypatch):
    # On sys.path by name, so that the spawned ranks can import its worker.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    bench = importlib.import_module("kaisa")
    out = bench.run(width=8, ranks=2, steps=1)
    assert out["precond_step_ms_spread"] > 0 and out["precond_step_ms_all_ranks_invert"] > 0


@pytest.mark.slow  # a second spawn of 2 processes
def test_self_check_reports_agreement(capsys):
    assert w.main() == 0
    out = capsys.readouterr().out
    assert "NaturalGradient(ggn)  max |2 ranks - 1 process|" in out
