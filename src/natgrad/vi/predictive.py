r"""Posterior-predictive averaging and calibration metrics for classifiers.

* :func:`posterior_predictive`: ``p(y | x) ≈ (1/S) Σ_s softmax(f(x; θ_s))`` with
  ``θ_s ~ q``, the Bayesian model average of a :class:`VariationalOnlineNewton`
  posterior (any object with a ``sampled_params()`` context manager works).
* :func:`classification_metrics`: accuracy, negative log-likelihood and expected
  calibration error of predicted class probabilities.
* :func:`expected_calibration_error`: ``ECE = Σ_b (n_b / n) |acc_b − conf_b|`` over
  ``n_bins`` equal-width confidence bins (Naeini et al. 2015; Guo et al. 2017), where
  a prediction's confidence is its largest class probability.

Example:
    >>> import torch
    >>> probs = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.65, 0.35], [0.25, 0.75]])
    >>> labels = torch.tensor([0, 1, 1, 1])
    >>> m = classification_metrics(probs, labels, n_bins=10)
    >>> round(m["accuracy"], 2), round(m["ece"], 3)  # (0.05 + 0.15 + 0.65 + 0.25) / 4
    (0.75, 0.275)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = ["classification_metrics", "expected_calibration_error", "posterior_predictive"]


class _Sampler(Protocol):
    def sampled_params(self, train: bool = False) -> Any: ...


def _softmax(out: Tensor) -> Tensor:
    return torch.softmax(out, dim=-1)


@torch.no_grad()
def posterior_predictive(
    model: nn.Module | Callable[[Tensor], Tensor],
    optimizer: _Sampler,
    inputs: Tensor,
    n_samples: int = 32,
    *,
    transform: Callable[[Tensor], Tensor] = _softmax,
) -> Tensor:
    """Monte-Carlo posterior predictive: the mean of ``transform(model(inputs))``.

    Args:
        model: The network whose parameters the optimiser holds.
        optimizer: A variational optimiser with ``sampled_params()``, e.g.
            :class:`natgrad.vi.VariationalOnlineNewton`.
        inputs: A batch of inputs.
        n_samples: Weight samples ``S >= 1``; ``0`` predicts at the posterior mean
            (the model's current weights) instead.
        transform: Output to the averaged quantity; class probabilities by default.

    Returns:
        ``(1/S) Σ_s transform(model(inputs; θ_s))``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise ValueError(
            f"n_samples must be an int >= 0 (0: the posterior mean), got {n_samples!r}"
        )
    if not hasattr(optimizer, "sampled_params"):
        raise TypeError(
            f"optimizer must have a sampled_params() context manager (e.g. "
            f"VariationalOnlineNewton), got {type(optimizer).__name__}"
        )
    if n_samples == 0:
        return transform(model(inputs))
    total: Tensor | None = None
    for _ in range(n_samples):
        with optimizer.sampled_params():
            out = transform(model(inputs))
        total = out if total is None else total + out
    assert total is not None
    return total / n_samples


def _check_probs(probs: Tensor, labels: Tensor) -> None:
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, classes) and labels (n,); got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if probs.shape[0] == 0:
        raise ValueError("probs is empty; pass at least one prediction")
    if labels.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {probs.shape[1]}), got {labels.min()}..{labels.max()}"
        )
    if not torch.isfinite(probs).all() or probs.min() < 0:
        raise ValueError("probs must be finite and non-negative (class probabilities, not logits)")
    if not torch.allclose(probs.sum(-1), torch.ones((), dtype=probs.dtype), atol=1e-3):
        raise ValueError("probs rows must sum to 1 (pass softmax probabilities, not logits)")


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins of the top-class confidence.

    Args:
        probs: ``(n, classes)`` predicted probabilities (rows sum to 1).
        labels: ``(n,)`` true class indices.
        n_bins: Number of bins on ``[0, 1]``; bin ``b`` holds confidences in
            ``(b/n_bins, (b+1)/n_bins]`` (the first also holds 0).

    Returns:
        ``Σ_b (n_b / n) |acc_b − conf_b|``, in ``[0, 1]``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    _check_probs(probs, labels)
    conf, pred = probs.detach().double().max(-1)
    correct = (pred == labels).double()
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, conf)
    sum_acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, correct)
    # Σ_b (n_b/n) |acc_b − conf_b| = Σ_b |Σ_{i∈b} (correct_i − conf_i)| / n
    return float((sum_acc - sum_conf).abs().sum() / len(labels))


def classification_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, mean negative log-likelihood and ECE of predicted probabilities.

    The NLL floors probabilities at the smallest positive float of their dtype, so a
    confident wrong prediction costs a large but finite amount.
    """
    _check_probs(probs, labels)
    p = probs.detach().double()
    picked = p.gather(1, labels.long()[:, None]).squeeze(1)
    tiny = torch.finfo(probs.dtype).tiny
    nll = float(-picked.clamp_min(tiny).log().mean())
    acc = float((p.argmax(-1) == labels).double().mean())
    ece = expected_calibration_error(probs, labels, n_bins)
    assert math.isfinite(nll)
    return {"accuracy": acc, "nll": nll, "ece": ece}
