"""examples/kfac_ddp.py: runs in one process, and under torchrun gives the same accuracies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kfac_ddp.py"


def test_example_runs_in_one_process(capsys):
    pytest.importorskip("sklearn")
    acc = load_script(EXAMPLE, "example_kfac_ddp").main(epochs=1, fisher="expectation")
    assert acc > 0.85
    assert "epoch 1: test accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_with_two_processes_prints_the_single_process_accuracies():
    pytest.importorskip("sklearn")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.fail("torchrun is not installed next to the Python running the tests")
    args = [str(EXAMPLE), "--epochs", "2", "--fisher", "expectation"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    lines = lambda out, n: [s.replace(f"({n} process(es))", "") for s in out.splitlines()]  # noqa: E731
    assert lines(one.stdout, 1) == lines(two.stdout, 2)
    assert len(lines(one.stdout, 1)) == 2
