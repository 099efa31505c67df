"""The examples run (in small settings), so that they cannot rot."""

from pathlib import Path

from helpers import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


def test_trpo_api_example(capsys):
    mean = load("trpo_api").main(steps=2048)
    assert -2000.0 < mean <= 0.0  # Pendulum's returns are negative, about -1,700 at worst
    assert "deterministic evaluation" in capsys.readouterr().out


def test_masked_actions_example(capsys):
    res = load("masked_actions").main(steps=1024, seeds=1)
    assert set(res) == {"masked", "unmasked"} and len(res["masked"]) == 1
    assert "training return > 0.5 first at steps" in capsys.readouterr().out
