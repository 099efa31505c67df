"""The Ray rollout backend: same batches and trained parameters as the local backend,
workers that die or raise are replaced without changing the results, a lost cluster
stops the run with a clear error and an intact checkpoint.

Each xdist worker that runs these tests starts its own local Ray instance (module
fixture, ``address="local"``: separate session directories and ports), so ``pytest -n 2``
needs no coordination.
"""

import importlib.util
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from natgrad.rl.rollout import LocalCollector
from tests.rl.ray_faults import InjectedEnvFactory

from .test_rollout import assert_batches_equal

ROOT = Path(__file__).resolve().parents[2]


def start_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # fmt: skip


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    start_ray()
    yield start_ray
    ray.shutdown()


def sampler_for(collector, seed=0):
    from natgrad.rl.policies import ActorCritic

    torch.manual_seed(seed)
    return ActorCritic(collector.obs_dim, collector.action_space).sampler()


SEED = 3


def trpo(**kw):
    from natgrad.rl import TRPO

    base = dict(n_envs=4, n_steps=64, seed=SEED, normalize_obs=True, normalize_reward=True,
                n_critic_updates=2, use_preset=False)  # fmt: skip
    return TRPO("CartPole-v1", **{**base, **kw})


def params(agent):
    return [p.detach().clone() for p in agent.policy.parameters()]


# --------------------------------------------------------------------- without a cluster


def test_missing_ray_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "natgrad.rl.rollout.ray", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install natgrad\[ray\]"):
        trpo(vec="ray")


def test_bad_arguments_and_unreachable_address_are_value_errors():
    pytest.importorskip("ray")
    from natgrad.rl.rollout.ray import RayCollector
    from natgrad.rl.rollout.ray_worker import check_reachable

    with pytest.raises(ValueError, match="workers=5"):
        RayCollector("CartPole-v1", 4, 0, workers=5)
    with pytest.raises(ValueError, match="timeout=0"):
        RayCollector("CartPole-v1", 4, 0, timeout=0)
    with pytest.raises(ValueError, match="nothing answers there"):
        check_reachable("127.0.0.1:1", timeout=2)
    check_reachable("auto")  # left to Ray


# --------------------------------------------------------------------- equivalence


@pytest.mark.ray
def test_batches_and_states_match_local_collector(ray_cluster):
    from natgrad.rl.rollout.ray import RayCollector

    with pytest.raises(ValueError, match="asks for 4 CPUs but the Ray cluster has 2"):
        RayCollector("Pendulum-v1", 4, 7, workers=4, worker_cpus=1)
    kw = dict(normalize_obs=True, normalize_reward=True)
    local = LocalCollector("Pendulum-v1", 5, 7, **kw)
    with RayCollector("Pendulum-v1", 5, 7, workers=2, **kw) as rc:
        assert (rc.obs_dim, rc.action_space) == (local.obs_dim, local.action_space)
        sampler = sampler_for(local)
        for _ in range(2):
            assert_batches_equal(rc.collect(sampler, 150), local.collect(sampler, 150))
        np.testing.assert_array_equal(rc.obs_normalizer.rms.mean, local.obs_normalizer.rms.mean)
        with pytest.raises(ValueError, match="sampler kind"):  # user error: raised as is
            rc.collect(sampler_for(LocalCollector("CartPole-v1", 1, 0)), 10)
        state = rc.state_dict()  # LocalCollector layout: resumable on either backend
        assert sorted(state) == sorted(local.state_dict())
        other = LocalCollector("Pendulum-v1", 5, 7, **kw)
        other.load_state_dict(state)
        batch = local.collect(sampler, 100)
        assert_batches_equal(rc.collect(sampler, 100), batch)
        assert_batches_equal(other.collect(sampler, 100), batch)
        rc.load_state_dict(local.state_dict())
        assert_batches_equal(rc.collect(sampler, 50), local.collect(sampler, 50))
    local.close()


@pytest.mark.ray
def test_trpo_on_ray_trains_the_same_parameters_as_sync(ray_cluster):
    with trpo() as sync, trpo(vec="ray", workers=2) as ray_:
        assert type(ray_.collector).__name__ == "RayCollector"
        for _ in range(3):
            a, b = sync.train_iteration(), ray_.train_iteration()
            assert a["episode_return"] == b["episode_return"]
        for p, q in zip(params(sync), params(ray_)):
            assert torch.equal(p, q)
        # a checkpoint of the Ray run continues on the sync backend, bit for bit
        with trpo() as resumed:
            resumed.load_state_dict(ray_.state_dict())
            sync.train_iteration(), resumed.train_iteration()
            for p, q in zip(params(sync), params(resumed)):
                assert torch.equal(p, q)


# --------------------------------------------------------------------- faults


@pytest.mark.ray
def test_actor_killed_mid_collect_is_replaced_and_batch_unchanged(ray_cluster):
    import ray

    from natgrad.rl.rollout.ray import RayCollector

    factory = InjectedEnvFactory("CartPole-v1", latency=0.002)  # 2 envs x 200 steps: ~0.8 s
    local = LocalCollector(factory, 4, 1, normalize_obs=True)
    with RayCollector(factory, 4, 1, workers=2, normalize_obs=True) as rc:
        sampler = sampler_for(local)
        assert_batches_equal(rc.collect(sampler, 200), local.collect(sampler, 200))
        victim = rc.actors[0]
        timer = threading.Timer(0.3, lambda: ray.kill(victim, no_restart=True))
        timer.start()
        batch = rc.collect(sampler, 200)
        timer.join()
        assert rc.restarts == 1 and rc.actors[0] is not victim
        assert_batches_equal(batch, local.collect(sampler, 200))
        assert_batches_equal(rc.collect(sampler, 50), local.collect(sampler, 50))
    local.close()


@pytest.mark.ray
def test_worker_process_killed_mid_run_training_continues_bit_exact(ray_cluster, tmp_path):
    from natgrad.rl.rollout.ray import RayCollector

    # env 1 SIGKILLs its worker process at its 150th step (third iteration), once
    faulty = InjectedEnvFactory("CartPole-v1", fault_env=1, fault_step=150, fault_kind="kill",
                                marker=str(tmp_path / "kill"))  # fmt: skip
    rc = RayCollector(faulty, 4, SEED, workers=2, normalize_obs=True, normalize_reward=True)
    local = LocalCollector(InjectedEnvFactory("CartPole-v1"), 4, SEED,
                           normalize_obs=True, normalize_reward=True)  # fmt: skip
    with trpo(collector=local) as clean, trpo(collector=rc) as hit:
        for _ in range(4):
            clean.train_iteration(), hit.train_iteration()
        assert rc.restarts == 1 and (tmp_path / "kill.0").exists()
        for p, q in zip(params(clean), params(hit)):
            assert torch.equal(p, q)


@pytest.mark.ray
def test_env_exceptions_are_retried_then_reported_with_the_env_index(ray_cluster, tmp_path):
    from natgrad.rl.rollout.ray import RayCollector, RayRolloutError

    flaky = InjectedEnvFactory("CartPole-v1", fault_env=2, fault_step=30,
                               marker=str(tmp_path / "flaky"), times=2)  # fmt: skip
    local = LocalCollector("CartPole-v1", 3, 0)
    with RayCollector(flaky, 3, 0, workers=2, max_restarts=2) as rc:
        sampler = sampler_for(local)
        assert_batches_equal(rc.collect(sampler, 40), local.collect(sampler, 40))
        assert rc.restarts == 2
    broken = InjectedEnvFactory("CartPole-v1", fault_env=2, fault_step=5)  # every time
    with RayCollector(broken, 3, 0, workers=2, max_restarts=1) as rc:
        with pytest.raises(RayRolloutError, match=r"env 2 failed 2 times in a row.*injected"):
            rc.collect(sampler, 10)
    local.close()


@pytest.mark.ray
def test_a_hanging_env_on_a_ray_worker_is_named_with_its_step(ray_cluster):
    import time

    from natgrad.rl.envs import EnvFactory
    from natgrad.rl.rollout.ray import RayCollector, RayRolloutError
    from tests.rl.bad_envs import HangingEnv  # importable on the workers

    with RayCollector(EnvFactory(HangingEnv), 2, 0, workers=2, step_timeout=1.5) as rc:
        sampler = sampler_for(rc)
        rc.collect(sampler, 100)  # each env hangs at step 300 of its life
        start = time.monotonic()
        with pytest.raises(
            RayRolloutError,
            match=r"env [01] did not return from step\(\) within step_timeout=1.5 s "
            r"\(at step 199 of the rollout, on Ray worker [01]\)",
        ):
            rc.collect(sampler, 300)
        assert time.monotonic() - start < 60


@pytest.mark.ray
def test_cluster_gone_stops_cli_with_clear_error_and_intact_checkpoint(
    ray_cluster, tmp_path, monkeypatch, capsys
):
    import ray

    from natgrad.cli import main
    from natgrad.rl.rollout.ray import RayClusterGone, RayCollector
    from natgrad.utils.checkpoint import load_checkpoint

    collect, calls = RayCollector.collect, []

    def collect_then_lose_cluster(self, sampler, n_steps):
        calls.append(1)
        if len(calls) == 3:
            ray.shutdown()
        return collect(self, sampler, n_steps)

    monkeypatch.setattr(RayCollector, "collect", collect_then_lose_cluster)
    run = tmp_path / "run"
    args = ["train", "CartPole-v1", "--backend", "ray", "--workers", "2", "--n-envs", "2",
            "--n-steps", "64", "--steps", "640", "--checkpoint-every", "1", "--run-dir", str(run),
            "--no-progress", "--no-eval", "--tensorboard", "false"]  # fmt: skip
    try:
        assert main(args) == 1
    finally:
        if not ray.is_initialized():
            ray_cluster()  # restart for the other tests of this process
    err = capsys.readouterr().err
    assert "the Ray cluster at" in err and "is gone" in err and "is intact" in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2 * 128  # the last good one
    assert issubclass(RayClusterGone, RuntimeError)
    # ... and the run continues from it on the local backend
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--backend", "sync", "--no-progress",
                 "--no-eval"]) == 0  # fmt: skip
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 640


UNREACHABLE = """
import os, signal, ray
from natgrad.rl.rollout.ray import RayClusterGone, RayCollector
from natgrad.rl.policies import ActorCritic
rc = RayCollector("CartPole-v1", 2, 0, workers=2)  # its own local instance
rc.probe_timeout = 2.0
sampler = ActorCritic(rc.obs_dim, rc.action_space).sampler()
rc.collect(sampler, 20)
for p in ray._private.worker._global_node.all_processes["gcs_server"]:
    os.kill(p.process.pid, signal.SIGKILL)  # the head's control store dies
try:
    rc.collect(sampler, 20)
except RayClusterGone as exc:
    print("GONE:", exc)
rc.close()
"""


@pytest.mark.ray
def test_unreachable_cluster_raises_cluster_gone_quickly():
    pytest.importorskip("ray")
    # In a subprocess: Ray itself ends a driver that cannot reach its GCS for 60 s.
    proc = subprocess.run([sys.executable, "-c", UNREACHABLE], capture_output=True,
                          text=True, timeout=150)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GONE: the Ray cluster at" in proc.stdout
    assert "did not answer a status request within 2 s" in proc.stdout


# --------------------------------------------------------------------- benchmark


@pytest.mark.ray
def test_scaling_bench_quick(ray_cluster):
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "bench" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = module.run(quick=True)
    for env in ("latency", "hopper"):
        rates = out[env]["steps_per_second"]
        assert set(rates) >= {"sync", "async", "ray1", "ray2"}
        assert all(r > 0 for r in rates.values())
    assert "ray2_over_ray1" in out["latency"]
