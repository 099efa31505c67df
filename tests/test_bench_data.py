"""bench/data.py: fixed, download-free splits with the documented shapes and dtypes."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import load_script

data = load_script(Path(__file__).resolve().parents[1] / "bench" / "data.py", "bench_data")


def _check(split, n_train, n_test, width):
    assert split.x_train.shape == (n_train, width) and split.x_test.shape == (n_test, width)
    assert split.y_train.shape == (n_train,) and split.y_test.shape == (n_test,)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert set(split.y_train.tolist()) == set(range(10)) == set(split.y_test.tolist())
    assert torch.isfinite(split.x_train).all() and torch.isfinite(split.x_test).all()


def test_digits_split_is_fixed_and_standardised():
    a, b = data.digits(), data.digits()
    _check(a, 1437, 360, 64)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    # standardised with the training statistics: zero mean, unit (or zero) spread
    assert a.x_train.mean(0).abs().max() < 1e-5
    std = a.x_train.std(0, unbiased=False)
    assert torch.all(((std - 1).abs() < 1e-4) | (std == 0))
    a.x_train.add_(1)  # callers get copies
    assert not torch.equal(a.x_train, data.digits().x_train)


def test_mnist1d_is_generated_with_defaults_and_leaves_global_rngs_alone():
    pytest.importorskip("mnist1d")
    # make_dataset seeds the legacy global generators; mnist1d() must restore them.
    np.random.seed(7)  # noqa: NPY002
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    random.seed(7)
    data._mnist1d.cache_clear()
    split = data.mnist1d()
    assert np.random.rand() == expected_np and random.random() == expected_py  # noqa: NPY002
    _check(split, 4000, 1000, 40)
    assert all(torch.equal(u, v) for u, v in zip(split, data.mnist1d()))


def test_validation_split_partitions_the_training_rows():
    full = data.digits()
    val = data.validation_split(full, fraction=0.25, seed=3)
    assert len(val.y_train) + len(val.y_test) == len(full.y_train)
    assert len(val.y_test) == round(0.25 * len(full.y_train))
    rows = torch.cat([val.x_train, val.x_test])
    assert torch.equal(rows.sort(0).values, full.x_train.sort(0).values)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1e-9])
def test_validation_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction"):
        data.validation_split(data.digits(), fraction=fraction)
