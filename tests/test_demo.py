"""``natgrad demo``: the numbers against closed forms, and the CLI end to end."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad import DiagGaussian, fisher_matrix
from natgrad.cli import main
from natgrad.cli.demo.maths import (
    DEFAULT_SIGMAS,
    analytic_fisher,
    fit_paths,
    gaussian_fisher,
    gaussian_model,
    gaussian_shift,
)
from natgrad.cli.demo.plots import check_png_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND", "PNG is truncated"
    return struct.unpack(">II", data[16:24])


# --- the maths --------------------------------------------------------------


@pytest.mark.parametrize("sigma", DEFAULT_SIGMAS)
def test_seed_pairs_closed_forms(sigma: float) -> None:
    s = gaussian_shift(sigma)
    assert (s.mu_old, s.mu_new) == (-1.0, 1.0)
    assert float(s.euclidean_distance) == 2.0
    # KL = (Δμ)²/(2σ²) = 2/σ²; Fisher distance² = (Δμ)²/σ² = 4/σ².
    assert float(s.kl) == pytest.approx(2 / sigma**2, rel=1e-12)
    assert float(s.fisher_distance) ** 2 == pytest.approx(4 / sigma**2, rel=1e-12)
    assert s.fisher.dtype == torch.float64
    torch.testing.assert_close(s.fisher, analytic_fisher(sigma), rtol=1e-12, atol=1e-12)
    assert s.fisher_error <= 1e-12


def test_default_pairs_numbers() -> None:
    small, large = (gaussian_shift(s) for s in DEFAULT_SIGMAS)
    assert DEFAULT_SIGMAS == (0.3, 3.0)
    assert round(float(small.kl), 4) == 22.2222
    assert round(float(large.kl), 4) == 0.2222
    assert round(float(small.fisher_distance), 4) == 6.6667
    assert round(float(large.fisher_distance), 4) == 0.6667
    # The same Euclidean step is 100 times the KL when σ is 10 times smaller.
    assert float(small.kl / large.kl) == pytest.approx(100.0, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    sigma=st.floats(0.05, 20.0),
    mu_old=st.floats(-5.0, 5.0),
    shift=st.floats(-5.0, 5.0),
)
def test_shift_closed_forms_property(sigma: float, mu_old: float, shift: float) -> None:
    s = gaussian_shift(sigma, mu_old, mu_old + shift)
    dmu = (mu_old + shift) - mu_old
    assert float(s.kl) == pytest.approx(dmu**2 / (2 * sigma**2), rel=1e-9, abs=1e-12)
    assert float(s.fisher_distance) ** 2 == pytest.approx(dmu**2 / sigma**2, rel=1e-9, abs=1e-12)
    # A pure mean shift: the KL is exactly half the squared Fisher distance.
    assert float(s.kl) == pytest.approx(0.5 * float(s.fisher_distance) ** 2, rel=1e-9, abs=1e-12)
    assert float(s.euclidean_distance) == pytest.approx(abs(dmu), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("method", ["ggn", "kl_hessian"])
@pytest.mark.parametrize(("mean", "sigma"), [(-1.0, 0.3), (1.0, 3.0), (0.0, 1.0), (2.5, 0.07)])
def test_fisher_matrix_is_diag_inv_var_and_two(method: str, mean: float, sigma: float) -> None:
    fisher = gaussian_fisher(mean, sigma, method=method)
    expected = torch.diag(torch.tensor([1 / sigma**2, 2.0], dtype=torch.float64))
    torch.testing.assert_close(fisher, expected, rtol=1e-12, atol=1e-12)


def test_gaussian_model_is_a_natgrad_model() -> None:
    params = [torch.tensor(0.5, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)]
    dist = gaussian_model(params)
    assert isinstance(dist, DiagGaussian)
    assert dist.mean.shape == (1, 1)
    torch.testing.assert_close(
        fisher_matrix(gaussian_model, params), analytic_fisher(math.exp(-0.2))
    )


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "0.3", None])
def test_bad_sigma_is_a_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="sigma"):
        gaussian_shift(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma"):
        analytic_fisher(bad)  # type: ignore[arg-type]


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="mu_new"):
        gaussian_shift(1.0, 0.0, float("nan"))
    with pytest.raises(ValueError, match="method"):
        gaussian_fisher(0.0, 1.0, method="empirical")
    with pytest.raises(ValueError, match="lr"):
        fit_paths(lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        fit_paths(steps=0)
    with pytest.raises(ValueError, match="start"):
        fit_paths(start=(1.0,))  # type: ignore[arg-type]


def test_describe_prints_every_number() -> None:
    text = gaussian_shift(0.3).describe()
    for number in ("2.0000", "22.2222", "6.6667", "11.1111", "equal to 1e-12"):
        assert number in text


def test_fit_paths_natural_gradient_wins() -> None:
    target = (2.0, math.log(0.5))
    gd, ng = fit_paths((-3.0, math.log(3.0)), target, lr=0.2, steps=40)
    assert gd.name == "gradient descent" and ng.name == "natural gradient"
    assert gd.points.shape == ng.points.shape == (41, 2)
    assert gd.losses.shape == (41,)
    torch.testing.assert_close(gd.points[0], ng.points[0])
    # The natural gradient in μ is μ − μ*, whatever σ: μ* − μ shrinks by (1 − lr) a step.
    err = ng.points[:, 0] - target[0]
    torch.testing.assert_close(err[1:], 0.8 * err[:-1], rtol=1e-10, atol=1e-12)
    assert float(ng.losses[-1]) < 1e-3
    assert float(gd.losses[-1]) > 1.0
    assert float(ng.losses[-1]) < float(ng.losses[0])


def test_check_png_path(tmp_path: Path) -> None:
    assert check_png_path(tmp_path / "a.png") == tmp_path / "a.png"
    with pytest.raises(ValueError, match=r"end in \.png"):
        check_png_path(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="is a directory"):
        (tmp_path / "d.png").mkdir()
        check_png_path(tmp_path / "d.png")
    with pytest.raises(ValueError, match="does not exist"):
        check_png_path(tmp_path / "missing" / "a.png")


# --- the CLI ----------------------------------------------------------------


def test_cli_gaussians_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.png"
    assert main(["demo", "gaussians", "--out", str(out)]) == 0
    width, height = png_size(out)
    assert width > 500 and height > 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]  # no temporary left
    printed = capsys.readouterr().out
    for number in ("22.2222", "0.2222", "6.6667", "0.6667", "11.1111", "0.1111", "2.0000"):
        assert number in printed
    assert str(out) in printed


def test_cli_gaussians_default_out_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "gaussians", "--sigmas", "0.5"]) == 0
    png_size(tmp_path / "gaussians.png")
    assert "sigma = 0.5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("missing/g.png", "does not exist"),
        ("g.jpg", r"end in \.png"),
        ("adir.png", "is a directory"),
    ],
)
def test_cli_bad_out_is_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, message: str
) -> None:
    (tmp_path / "adir.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert main(["demo", "gaussians", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert "natgrad demo: error: --out" in err
    assert re.search(message, err)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "gaussians", "--sigmas", "0"],
        ["demo", "gaussians", "--sigmas", "0.3", "nan"],
        ["demo", "steps", "--lr", "-1"],
        ["demo", "steps", "--steps", "0"],
    ],
)
def test_cli_bad_numbers_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    assert argv[2] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_demo_lists_topics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "gaussians" in out and "steps" in out


def test_cli_unknown_topic_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "nonsense"])
    assert exc.value.code == 2


def test_cli_steps_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.png"
    assert main(["demo", "steps", "--out", str(out), "--steps", "15"]) == 0
    png_size(out)
    printed = capsys.readouterr().out
    assert "gradient descent" in printed and "natural gradient" in printed
    assert "15 steps" in printed
