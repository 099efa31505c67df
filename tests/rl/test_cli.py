"""Smoke tests of every CLI command, and the clear errors a user can meet."""

import json
import os

import pytest

from natgrad.cli import main

from .bad_envs import NAN_ENV, RAISING_ENV

TINY = ["--steps", "256", "--n-envs", "2", "--n-steps", "64", "--batch-size", "32",
        "--n-critic-updates", "1", "--eval-episodes", "2", "--no-progress"]  # fmt: skip


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


def test_train_eval_plot_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", *TINY, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "deterministic evaluation over 2 episodes" in out
    for name in ("checkpoint.pt", "config.json", "progress.csv", "learning_curve.png", "eval.json"):
        assert (run / name).exists(), name
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["algorithm"]["n_steps"] == 64
    assert config["config"]["rollout"]["n_envs"] == 2
    assert config["config"]["run"]["total_steps"] == 256

    assert main(["eval", str(run), "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["env_id"] == "CartPole-v1"

    assert (
        main(["train", "--resume", str(run), "--steps", "512", "--no-progress", "--no-eval"]) == 0
    )
    rows = (run / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 512 // 128  # header + one row per iteration, none duplicated
    assert json.loads((run / "config.json").read_text())["config"]["run"]["total_steps"] == 512

    other = tmp_path / "run2"
    assert (
        main(["train", "CartPole-v1", *TINY, "--run-dir", str(other), "--seed", "1", "--no-eval"])
        == 0
    )
    png = tmp_path / "curves.png"
    assert main(["plot", str(run), str(other), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_npg_and_set_flags(tmp_path):
    run = tmp_path / "npg"
    args = ["train", "Pendulum-v1", "--algo", "npg", *TINY, "--run-dir", str(run),
            "--set", "max_kl=0.02", "--set", "normalize_obs=true", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["algo"] == "npg" and cfg["config"]["algorithm"]["max_kl"] == 0.02
    assert cfg["config"]["algorithm"]["normalize_obs"] is True


def test_help_config_lists_fields(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "max_kl = 0.01" in out and "Trust-region radius" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "CartPol-v1"], "did you mean 'CartPole-v1'"),
        (["train", "--max-kl", "-1"], "max_kl=-1.0; it must be a finite number > 0"),
        (["train", "--set", "max_k=0.1"], "did you mean max_kl"),
        (["train", "--set", "max_kl"], "expected FIELD=VALUE"),
        (["train", "--n-envs", "two"], "cannot be read as int"),
    ],
)
def test_bad_arguments_give_clear_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run), "--no-eval"]) == 0
    before = _files(run)
    assert main(["train", *TINY, "--run-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _files(run) == before


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run), "--no-eval"]) == 0
    ckpt = run / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    before = _files(run)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert _files(run) == before
    assert main(["eval", str(run)]) == 2
    assert _files(run) == before

    ckpt.write_bytes(good)
    assert main(["train", "--resume", str(run), "--policy-hidden", "8,8"]) == 2
    assert "policy_hidden cannot change" in capsys.readouterr().err
    assert _files(run) == {**before, "checkpoint.pt": good}
    assert main(["eval", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


def test_nan_env_stops_with_iteration_and_keeps_last_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", NAN_ENV, "--n-envs", "1", "--n-steps", "64", "--batch-size", "32",
            "--n-critic-updates", "1", "--steps", "1000", "--checkpoint-every", "1",
            "--run-dir", str(run), "--no-progress"]  # fmt: skip
    # NaN appears at step 300 of the env's life: iteration 5 (steps 257-320).
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "iteration 5" in err and "non-finite" in err and "intact" in err
    from natgrad.utils.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 256


def test_env_raising_in_subprocess_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", RAISING_ENV, "--vec", "async", "--n-envs", "2", "--n-steps", "64",
            "--steps", "10000", "--run-dir", str(run), "--no-progress"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "simulator crashed" in err and "env" in err


def test_demo_listed_and_main_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out
    assert main(["demo"]) == 0


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_ctrl_c_saves_a_checkpoint(tmp_path, monkeypatch, capsys):
    import signal

    from natgrad.rl import TRPO

    original = TRPO.collect_rollout
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(TRPO, "collect_rollout", interrupted)
    run = tmp_path / "run"
    args = ["train", *TINY, "--steps", "100000", "--critic-worker", "true", "--run-dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "checkpoint saved" in out and f"--resume {run}" in out
    from natgrad.utils.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoint.pt")
    assert state["iteration"] == 2
    # the batch collected ahead for iteration 3 is in the checkpoint, and a resumed run uses it
    pending = state["rollouts"]["pending_rollout"]
    assert (pending is not None) == (os.cpu_count() >= 2)
    monkeypatch.setattr(TRPO, "collect_rollout", original)
    agent = TRPO.load(run / "checkpoint.pt")
    agent.train_iteration()
    assert agent.iteration == 3 and agent.rollouts.state_dict()["pending_rollout"] is None
    agent.close()


def test_a_hanging_env_in_a_subprocess_stops_the_run_naming_env_and_step(tmp_path, capsys):
    from .bad_envs import HANGING_ENV

    run = tmp_path / "run"
    # each env hangs at step 300 of its life: step 43 of the fifth iteration of 64 steps
    args = ["train", HANGING_ENV, "--vec", "async", "--n-envs", "2", "--n-steps", "64",
            "--steps", "10000", "--step-timeout", "1.5", "--checkpoint-every", "1",
            "--run-dir", str(run), "--no-progress"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "iteration 5: at step 43 of the rollout: env 0 did not return from step()" in err
    assert "step_timeout=1.5 s" in err and "intact" in err
    from natgrad.utils.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 512


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_ctrl_c_twice_while_an_env_hangs_stops_at_once_keeping_the_checkpoint(tmp_path, capsys):
    import signal
    import threading
    import time

    from .bad_envs import HANGING_ENV

    run = tmp_path / "run"
    args = ["train", HANGING_ENV, "--vec", "async", "--n-envs", "2", "--n-steps", "64",
            "--steps", "10000", "--checkpoint-every", "1", "--run-dir", str(run),
            "--no-progress"]  # fmt: skip

    def press_ctrl_c_twice():
        while not (run / "checkpoint.pt").exists():
            time.sleep(0.05)
        time.sleep(1.5)  # the fifth iteration is hanging by now
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    presser = threading.Thread(target=press_ctrl_c_twice, daemon=True)
    presser.start()
    start = time.monotonic()
    assert main(args) == 130
    assert time.monotonic() - start < 30  # not the 60 s step timeout
    presser.join()
    err = capsys.readouterr().err
    assert "interrupted" in err and "intact" in err
    from natgrad.utils.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 512


@pytest.mark.parametrize(
    "code, why",
    [
        (30, "it is on a read-only file system"),
        (28, "the disk is full"),
        (13, "it is not writable"),
    ],
)
def test_an_unwritable_run_dir_is_refused_at_start_and_nothing_is_lost(
    tmp_path, capsys, monkeypatch, code, why
):
    import errno

    from natgrad.rl import run as rundir

    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")

    def fail(path, write, **kw):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rundir, "atomic_write", fail)
    assert code in (errno.EROFS, errno.ENOSPC, errno.EACCES)
    assert main(["train", *TINY, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to the run directory {run}: {why}" in err
    assert "choose another --run-dir" in err
    assert _files(run) == {"notes.txt": b"mine"}


def test_a_full_disk_mid_run_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    from natgrad.rl.algos import persistence
    from natgrad.utils.checkpoint import load_checkpoint

    original, calls = persistence.save_checkpoint, []

    def fills_up(state, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(state, path)

    monkeypatch.setattr(persistence, "save_checkpoint", fills_up)
    run = tmp_path / "run"
    args = ["train", *TINY, "--steps", "1280", "--checkpoint-every", "1", "--run-dir", str(run)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "intact" in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 256  # the second save
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint.pt")]  # no temp left


@pytest.mark.parametrize("other", [["Pendulum-v1"], ["CartPole-v1", "--algo", "npg"]])
def test_resume_refuses_a_checkpoint_of_another_run_naming_both(tmp_path, capsys, other):
    run, stranger = tmp_path / "run", tmp_path / "stranger"
    assert main(["train", "CartPole-v1", *TINY, "--run-dir", str(run), "--no-eval"]) == 0
    assert main(["train", *other, *TINY, "--run-dir", str(stranger), "--no-eval"]) == 0
    (run / "checkpoint.pt").write_bytes((stranger / "checkpoint.pt").read_bytes())
    before = _files(run)
    assert main(["train", "--resume", str(run), "--steps", "512", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint belongs to another run" in err
    if other[0] == "Pendulum-v1":
        assert "env_id is 'Pendulum-v1' but config.json says 'CartPole-v1'" in err
    else:
        assert "algo is 'npg' but config.json says 'trpo'" in err
    assert _files(run) == before
