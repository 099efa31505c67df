"""Run each VI example's ``main()`` with small settings so the examples cannot rot."""

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_vi_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_regression_example(capsys) -> None:
    res = load("vi_linear_regression").main(["--lrs", "0.3", "--max-adam-steps", "400"])
    out = capsys.readouterr().out
    assert "ngvi_rho=1.0" in out and "best Adam" in out
    assert res["full"]["ngvi_rho=1.0"] == 1
    assert res["full"]["adam_lr=0.3"] is not None and res["full"]["adam_lr=0.3"] > 1


def test_logistic_regression_example(capsys) -> None:
    pytest.importorskip("sklearn")
    res = load("vi_logistic_regression").main(
        ["--ng-steps", "3", "--adam-steps", "5", "--n-samples", "4", "--elbo-samples", "20"]
    )
    out = capsys.readouterr().out
    assert "NG-VI ELBO" in out and "acc(pred)" in out
    assert res["ngvi"]["elbo"][3] > res["ngvi"]["elbo"][0]
    assert res["ngvi"]["acc_predictive"] > 0.9
