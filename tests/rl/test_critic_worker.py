"""The critic fitted in a helper process gives the same bits as in process."""

import copy
import os
import signal

import pytest
import torch

from natgrad.rl import TRPO
from natgrad.rl.algos.critic import MLPCriticTrainer
from natgrad.rl.algos.critic_worker import CriticWorker, fork_available
from natgrad.rl.policies import mlp

pytestmark = pytest.mark.skipif(not fork_available(), reason="the helper needs fork (Linux)")


def _data(n=300, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, generator=g)


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_helper_fit_equals_in_process_fit_bitwise():
    torch.manual_seed(0)
    a = mlp(5, (16, 16), 1, activation="tanh")
    b = copy.deepcopy(a)
    local, remote = MLPCriticTrainer(a, lr=3e-3), MLPCriticTrainer(b, lr=3e-3)
    worker = CriticWorker(remote)
    worker.start()
    assert worker.is_ready(wait=30)
    try:
        for k in range(3):
            obs, ret = _data(seed=k)
            ga, gb = torch.Generator().manual_seed(k), torch.Generator().manual_seed(k)
            la = local.fit(obs, ret, epochs=2, batch_size=64, generator=ga)
            pending = worker.fit_async(obs, ret, epochs=2, batch_size=64, generator=gb)
            assert pending.result() == la
            assert torch.equal(_flat(a), _flat(b))
            assert torch.equal(local.exp_avg_sq, remote.exp_avg_sq)
            assert local.steps == remote.steps == 10 * (k + 1)
            assert torch.equal(ga.get_state(), gb.get_state())
    finally:
        worker.close()
    assert worker._proc is None


def test_a_second_fit_before_the_first_result_is_refused():
    trainer = MLPCriticTrainer(mlp(5, (8,), 1, activation="tanh"), lr=1e-3)
    worker = CriticWorker(trainer)
    worker.start()
    assert worker.is_ready(wait=30)
    obs, ret = _data()
    gen = torch.Generator().manual_seed(0)
    pending = worker.fit_async(obs, ret, epochs=1, batch_size=64, generator=gen)
    with pytest.raises(RuntimeError, match="already in progress"):
        worker.fit_async(obs, ret, epochs=1, batch_size=64, generator=gen)
    pending.result()
    worker.close()


def test_a_helper_that_dies_during_a_fit_is_a_clear_error():
    trainer = MLPCriticTrainer(mlp(5, (8,), 1, activation="tanh"), lr=1e-3)
    worker = CriticWorker(trainer, poll_interval=0.05)
    worker.start()
    assert worker.is_ready(wait=30)
    obs, ret = _data(n=50_000)
    gen = torch.Generator().manual_seed(0)
    pending = worker.fit_async(obs, ret, epochs=20, batch_size=64, generator=gen)
    os.kill(worker._proc.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="critic helper process died during a fit"):
        pending.result()
    worker.close()


def test_after_a_helper_died_mid_fit_the_worker_and_the_agent_refuse_to_go_on(tmp_path):
    agent = TRPO("CartPole-v1", n_steps=64, critic_worker=True, use_preset=False)
    worker = agent.critic_fitter.worker
    worker.poll_interval = 0.05
    worker.start()
    assert worker.is_ready(wait=30)
    obs, ret = _data(n=50_000, d=4)
    gen = torch.Generator().manual_seed(0)
    pending = worker.fit_async(obs, ret, epochs=20, batch_size=64, generator=gen)
    os.kill(worker._proc.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="died during a fit"):
        pending.result()
    with pytest.raises(RuntimeError, match="parameters are undefined"):
        worker.fit_async(obs, ret, epochs=1, batch_size=64, generator=gen)
    with pytest.raises(RuntimeError, match="cannot save.*parameters are undefined"):
        agent.save(tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()
    agent.close()


def test_ctrl_c_while_waiting_still_waits_for_the_fit(monkeypatch):
    torch.manual_seed(2)
    a = mlp(5, (16,), 1, activation="tanh")
    b = copy.deepcopy(a)
    local, remote = MLPCriticTrainer(a, lr=1e-3), MLPCriticTrainer(b, lr=1e-3)
    worker = CriticWorker(remote, poll_interval=0.01)
    worker.start()
    assert worker.is_ready(wait=30)
    obs, ret = _data(n=5_000)
    local.fit(obs, ret, epochs=5, batch_size=64, generator=torch.Generator().manual_seed(0))
    pending = worker.fit_async(obs, ret, epochs=5, batch_size=64,
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
    conn, calls = worker._conn, {"n": 0}

    class Interrupting:
        def poll(self, timeout):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
            return conn.poll(timeout)

        def recv(self):
            return conn.recv()

    worker._conn = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        pending.result()
    worker._conn = conn
    assert torch.equal(_flat(a), _flat(b)) and local.steps == remote.steps  # fit completed
    pending2 = worker.fit_async(obs, ret, epochs=1, batch_size=64,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
    la2 = local.fit(obs, ret, epochs=1, batch_size=64, generator=torch.Generator().manual_seed(1))
    assert pending2.result() == la2 and torch.equal(_flat(a), _flat(b))
    worker.close()


def test_a_helper_gone_between_fits_falls_back_to_this_process_with_a_warning():
    torch.manual_seed(1)
    a = mlp(5, (8,), 1, activation="tanh")
    b = copy.deepcopy(a)
    local, remote = MLPCriticTrainer(a, lr=1e-3), MLPCriticTrainer(b, lr=1e-3)
    worker = CriticWorker(remote)
    worker.start()
    assert worker.is_ready(wait=30)
    os.kill(worker._proc.pid, signal.SIGKILL)
    worker._proc.join(timeout=5)
    obs, ret = _data()
    la = local.fit(obs, ret, epochs=2, batch_size=64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="exited .* fitting the critic in this process"):
        pending = worker.fit_async(obs, ret, epochs=2, batch_size=64,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert pending.result() == la
    assert torch.equal(_flat(a), _flat(b))
    worker.close()


def test_the_helper_exits_when_the_learner_goes_away():
    worker = CriticWorker(MLPCriticTrainer(mlp(5, (8,), 1, activation="tanh"), lr=1e-3))
    worker.start()
    assert worker.is_ready(wait=30)
    proc = worker._proc
    worker._conn.close()  # what the learner's death does to the pipe
    proc.join(timeout=10)
    assert not proc.is_alive()
    worker._proc = None


def _train(critic_worker: bool, iterations: int = 3):
    agent = TRPO("Pendulum-v1", n_envs=2, n_steps=128, seed=3, normalize_obs=True,
                 normalize_reward=True, critic_worker=critic_worker, use_preset=False)  # fmt: skip
    worker = agent.critic_fitter.worker
    if critic_worker:
        worker.start()
        assert worker.is_ready(wait=30)
    metrics = []
    agent.learn(256 * iterations, callback=lambda loc, glob: metrics.append(loc["metrics"]))
    used = critic_worker and worker._proc is not None
    state = _flat(agent.policy), agent.critic_fitter.trainer.steps, agent.generator.get_state()
    agent.close()
    return state, [m["value_loss"] for m in metrics], used


def test_agent_with_a_critic_helper_trains_bit_identically():
    (params_a, steps_a, gen_a), loss_a, _ = _train(critic_worker=False)
    (params_b, steps_b, gen_b), loss_b, used = _train(critic_worker=True)
    assert used
    assert torch.equal(params_a, params_b)
    assert loss_a == loss_b
    assert steps_a == steps_b
    assert torch.equal(gen_a, gen_b)
