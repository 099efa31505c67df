"""Calibration metrics: known answers, a loop reference, and bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad.vi import classification_metrics, expected_calibration_error


def ece_loop(probs, labels, n_bins):
    """Reference: the textbook definition, one bin at a time."""
    conf, pred = probs.max(-1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [
            i for i in range(len(labels)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)
        ]
        if members:
            acc = sum(float(pred[i] == labels[i]) for i in members) / len(members)
            avg_conf = sum(float(conf[i]) for i in members) / len(members)
            total += len(members) / len(labels) * abs(acc - avg_conf)
    return total


def test_confident_and_right_or_wrong():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == 0.0
    assert expected_calibration_error(probs, torch.tensor([1, 0])) == 1.0
    m = classification_metrics(probs, torch.tensor([1, 0]))
    assert m["accuracy"] == 0.0 and math.isfinite(m["nll"]) and m["nll"] > 700


def test_calibrated_predictions_have_zero_ece_and_known_nll():
    # In the 0.75 bin three of four are right; in the 0.55 bin 11 of 20.
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.55, 0.45]] * 20, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1] + [0] * 11 + [1] * 9)
    assert expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(0.0, abs=1e-12)
    m = classification_metrics(probs, labels)
    nll = -(3 * math.log(0.75) + math.log(0.25) + 11 * math.log(0.55) + 9 * math.log(0.45)) / 24
    assert m["nll"] == pytest.approx(nll, rel=1e-12)
    assert m["accuracy"] == pytest.approx(14 / 24)


@given(
    logits=st.lists(st.lists(st.floats(-6, 6), min_size=3, max_size=3), min_size=1, max_size=40),
    seed=st.integers(0, 10_000),
    n_bins=st.integers(1, 20),
)
def test_matches_the_loop_definition(logits, seed, n_bins):
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1)
    labels = torch.randint(0, 3, (len(logits),), generator=torch.Generator().manual_seed(seed))
    got = expected_calibration_error(probs, labels, n_bins)
    assert got == pytest.approx(ece_loop(probs, labels, n_bins), abs=1e-12)
    assert 0.0 <= got <= 1.0


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (torch.tensor([[2.0, -1.0]]), torch.tensor([0]), "probs must be finite and non-negative"),
        (torch.tensor([[0.6, 0.6]]), torch.tensor([0]), "sum to 1"),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([2]), "labels must lie in"),
        (torch.tensor([0.5, 0.5]), torch.tensor([0]), r"\(n, classes\)"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), "empty"),
    ],
)
def test_bad_input_is_named(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(probs, labels)


def test_bad_bins_and_label_dtype():
    probs = torch.tensor([[0.5, 0.5]])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, torch.tensor([0]), n_bins=0)
    with pytest.raises(TypeError, match="integer class indices"):
        expected_calibration_error(probs, torch.tensor([0.0]))
