"""Atari-size observations: the usual wrappers, NatureCNN, checkpoints (needs natgrad[atari])."""

import json

import numpy as np
import pytest

from natgrad.cli import main

ale_py = pytest.importorskip("ale_py")
pytest.importorskip("cv2")


def test_atari_wrapper_gives_stacked_frames_and_checkpoints_mid_episode():
    import gymnasium as gym

    from natgrad.rl.envs.atari import atari_wrapper
    from natgrad.rl.envs.make import dump_env, load_env

    gym.register_envs(ale_py)
    env = atari_wrapper(gym.make("ALE/Pong-v5"))
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.unwrapped._frameskip == 1  # moved into the preprocessing
    env.reset(seed=0)
    for _ in range(10):
        env.step(2)
    copy = load_env(dump_env(env))
    for _ in range(10):
        a, b = env.step(3), copy.step(3)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]


@pytest.mark.slow
def test_smoke_train_pong_a_few_thousand_steps_and_resume(tmp_path):
    run = tmp_path / "pong"
    args = ["train", "ALE/Pong-v5", "--env-package", "ale_py", "--env-wrapper", "atari",
            "--steps", "2048", "--n-steps", "512", "--n-critic-updates", "2", "--cg-iters", "10",
            "--checkpoint-every", "2", "--eval-episodes", "0", "--no-progress",
            "--run-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    assert (run / "checkpoint.pt").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert "(4, 84, 84)" in cfg["observation_space"]
    assert (
        main(["train", "--resume", str(run), "--steps", "2560", "--no-progress", "--no-eval"]) == 0
    )
