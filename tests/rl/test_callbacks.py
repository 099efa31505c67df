"""Callbacks: SB3's protocol run by the one learn loop, and the shipped callbacks."""

import io
import os
import signal
import sys

import numpy as np
import pytest

from natgrad.rl import TRPO
from natgrad.rl.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    InterruptCallback,
    LoggerCallback,
    ProgressBarCallback,
    StopTrainingOnRewardThreshold,
)
from natgrad.utils import read_progress

FAST = dict(n_steps=64, batch_size=32, n_critic_updates=1, use_preset=False)


def model(env="CartPole-v1", **kw):
    return TRPO(env, **{**FAST, **kw})


class Recorder(BaseCallback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.events, self.stop_after = [], stop_after

    def _on_training_start(self):
        self.events.append(("start", self.num_timesteps, self.total_timesteps))

    def _on_rollout_start(self):
        self.events.append(("rollout_start", self.num_timesteps))

    def _on_rollout_end(self):
        self.events.append(("rollout_end", self.locals["rollout"].n_steps))

    def _on_step(self):
        self.events.append(("step", self.num_timesteps, self.locals["metrics"]["iteration"]))
        return self.stop_after is None or self.n_calls < self.stop_after

    def _on_training_end(self):
        self.events.append(("end", self.num_timesteps))


def test_hooks_run_in_sb3_order_once_per_iteration():
    m = model()
    rec = Recorder()
    m.learn(192, callback=rec)
    assert rec.model is m and rec.n_calls == 3
    assert rec.events == [
        ("start", 0, 192),
        ("rollout_start", 0), ("rollout_end", 64), ("step", 64, 1.0),
        ("rollout_start", 64), ("rollout_end", 64), ("step", 128, 2.0),
        ("rollout_start", 128), ("rollout_end", 64), ("step", 192, 3.0),
        ("end", 192),
    ]  # fmt: skip
    m.close()


def test_returning_false_stops_and_every_callback_of_a_list_sees_every_iteration():
    m = model()
    a, b = Recorder(stop_after=2), Recorder()
    m.learn(10_000, callback=[a, b])
    assert m.iteration == 2 and a.n_calls == b.n_calls == 2
    assert a.events[-1] == b.events[-1] == ("end", 128)
    m.close()


def test_a_plain_function_gets_sb3s_locals_and_globals():
    m = model()
    seen = []

    def fn(locals_, globals_):
        seen.append((locals_["self"] is m, locals_["metrics"]["env_steps"]))
        return len(seen) < 2

    m.learn(10_000, callback=fn)
    assert seen == [(True, 64.0), (True, 128.0)]
    with pytest.raises(ValueError, match="is not a callback"):
        m.learn(64, callback=3)
    with pytest.raises(ValueError, match="CallbackList takes BaseCallback"):
        CallbackList([fn])
    m.close()


def test_checkpoint_callback_saves_on_schedule_and_at_the_end(tmp_path):
    m = model()
    cb = CheckpointCallback(128, tmp_path, "ck", save_on_end=True)
    m.learn(320, callback=cb)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ck_128_steps.pt", "ck_256_steps.pt", "ck_320_steps.pt"]
    latest = CheckpointCallback(64, tmp_path / "latest", "checkpoint", latest_only=True)
    m.learn(128, callback=latest, reset_num_timesteps=False)
    assert [p.name for p in (tmp_path / "latest").iterdir()] == ["checkpoint.pt"]
    assert TRPO.load(tmp_path / "latest" / "checkpoint.pt").num_timesteps == 448
    with pytest.raises(ValueError, match="save_freq=0"):
        CheckpointCallback(0, tmp_path)
    m.close()


def test_no_checkpoint_is_written_when_training_fails(tmp_path):
    class Boom(BaseCallback):
        def _on_step(self):
            raise RuntimeError("boom")

    m = model()
    cb = CheckpointCallback(10_000, tmp_path, save_on_end=True)
    with pytest.raises(RuntimeError, match="boom"):
        m.learn(128, callback=[cb, Boom()])
    assert list(tmp_path.iterdir()) == []
    m.close()


def test_eval_callback_logs_evaluations_saves_the_best_and_can_stop(tmp_path):
    m = model()
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1.0)  # any return beats it
    ev = EvalCallback("CartPole-v1", callback_on_new_best=stop, n_eval_episodes=2,
                      eval_freq=64, log_path=tmp_path, best_model_save_path=tmp_path,
                      verbose=0)  # fmt: skip
    m.learn(10_000, callback=ev)
    assert m.iteration == 1  # stopped at the first evaluation
    data = np.load(tmp_path / "evaluations.npz")
    assert data["timesteps"].tolist() == [64]
    assert data["results"].shape == data["ep_lengths"].shape == (1, 2)
    assert ev.best_mean_reward == ev.last_mean_reward == data["results"].mean()
    assert (tmp_path / "best_model.pt").exists()
    assert m.metrics["eval/mean_reward"] == ev.last_mean_reward
    m.close()


def test_eval_callback_refuses_another_task_and_rendering():
    m = model()
    with pytest.raises(ValueError, match="eval_env's observation_space"):
        m.learn(64, callback=EvalCallback("Pendulum-v1", eval_freq=64))
    with pytest.raises(ValueError, match="render=True is not supported"):
        EvalCallback("CartPole-v1", render=True)
    with pytest.raises(ValueError, match="must be EvalCallback's callback_on_new_best"):
        m.learn(64, callback=StopTrainingOnRewardThreshold(0.0))
    m.close()


def test_logger_callback_writes_progress_and_tensorboard(tmp_path):
    m = model()
    m.learn(128, callback=LoggerCallback(tmp_path, tensorboard=True))
    progress = read_progress(tmp_path)
    assert progress["env_steps"].tolist() == [64.0, 128.0]
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
    m.close()


def test_missing_tensorboard_is_an_error_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    m = model()
    with pytest.raises(ValueError, match="needs the tensorboard package"):
        m.learn(64, callback=LoggerCallback(tmp_path / "on", tensorboard=True))
    m.learn(64, callback=LoggerCallback(tmp_path / "auto"))  # silently skipped
    assert [p.name for p in (tmp_path / "auto").iterdir()] == ["progress.csv"]
    m.close()


def test_tensorboard_log_folder_gets_one_run_per_learn_call(tmp_path):
    m = TRPO("CartPole-v1", tensorboard_log=tmp_path, **FAST)
    m.learn(64)
    m.learn(64, tb_log_name="again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TRPO_1", "again_1"]
    m.close()


def test_progress_bar_off_a_terminal_prints_a_line_per_tenth(capsys):
    m = model()
    out = io.StringIO()
    m.learn(640, callback=ProgressBarCallback(file=out))
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 10 and "100%" in lines[-1] and "ret=" in lines[-1]
    m.learn(64, progress_bar=True)  # to stderr, not a terminal under pytest
    assert "100%" in capsys.readouterr().err
    m.close()


def test_verbose_prints_a_line_per_iteration(capsys):
    m = TRPO("CartPole-v1", verbose=1, **FAST)
    m.learn(128, log_interval=1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("iteration")]
    assert len(lines) == 2 and "episode_return" in lines[0]
    m.close()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_interrupt_callback_stops_after_the_iteration():
    m = model()
    stop = InterruptCallback()

    class CtrlC(BaseCallback):
        def _on_rollout_end(self):
            if self.model.iteration == 1:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup
    m.learn(10_000, callback=[stop, CtrlC()])
    assert stop.requested and m.iteration == 2
    assert signal.getsignal(signal.SIGINT) is before  # restored
    m.close()
