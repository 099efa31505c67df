"""The examples run (in small settings), so that they cannot rot."""

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_trpo_api_example(capsys):
    mean = load("trpo_api").main(steps=2048)
    assert -2000.0 < mean <= 0.0  # Pendulum's returns are negative, about -1,700 at worst
    assert "deterministic evaluation" in capsys.readouterr().out
