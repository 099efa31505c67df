"""The rollout sampler of a small-image CNN policy, as numpy matrices.

A convolution is a linear map: on a small image (MinAtar's 10×10×C) its dense matrix is
small enough (400 × 1,024 for the MinAtar CNN) that one matrix product per step is far
cheaper than a torch forward pass, whose per-call overhead dominates at batch 1. So a
``features → MLP head`` actor whose extractor is one image through the small CNN
becomes a :class:`~natgrad.rl.policies.sampler.NumpyMLPSampler` over the layers
``[conv as a dense matrix (the HWC→CHW transpose and the uint8 scaling folded in), ReLU]
→ [Linear, ReLU] → head``. The matrix is built once per sampler (after each update) by
applying the convolution to the identity.

Cost per env step on MinAtar Breakout (``python bench/minatar_trpo.py speed``):
``sampler_us_per_step`` there, against the torch forward under ``inference_mode``.
It uses BLAS (``row_exact=False``): like the torch sampler, a row's rounding may depend
on the batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from natgrad.mlp import mlp_spec
from natgrad.rl.policies.extractors import ObsFeatures, SmallCNN, _image
from natgrad.rl.policies.sampler import NumpyMLPSampler

__all__ = ["MAX_DENSE", "cnn_numpy_sampler"]

MAX_DENSE = 4_000_000
"""Largest dense convolution matrix (entries) worth building; larger images use torch."""


def _dense_layers(actor: nn.Module) -> list[tuple[np.ndarray, np.ndarray, str | None]] | None:
    if not isinstance(actor, nn.Sequential) or len(actor) != 2:
        return None
    features, head = actor[0], actor[1]
    spec = mlp_spec(head)
    if not isinstance(features, ObsFeatures) or spec is None or features.custom is not None:
        return None
    if len(features.layout.parts) != 1 or not isinstance(features.extractors[0], SmallCNN):
        return None
    part, cnn = features.layout.parts[0], features.extractors[0]
    conv, linear = cnn.cnn[0], cnn.linear[0]
    assert isinstance(conv, nn.Conv2d) and isinstance(linear, nn.Linear)
    assert conv.bias is not None
    d = part.size
    with torch.no_grad():
        n_out = int(np.prod(conv(_image(part, torch.zeros(1, d))).shape[1:]))
        if d * n_out > MAX_DENSE:
            return None
        basis = torch.eye(d, dtype=conv.weight.dtype)
        dense = torch.nn.functional.conv2d(
            _image(part, basis), conv.weight, None, conv.stride, conv.padding
        ).reshape(d, n_out)
        bias = conv.bias.repeat_interleave(n_out // conv.out_channels)
    layers: list[tuple[np.ndarray, np.ndarray, str | None]] = [
        (dense.numpy(), bias.numpy(), "relu"),
        (linear.weight.detach().numpy().T, linear.bias.detach().numpy(), "relu"),
    ]
    for layer in spec.layers:
        w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
        layers.append((w.numpy().T, b.numpy(), layer.activation))
    return layers


def cnn_numpy_sampler(actor: nn.Module, kind: str, **kwargs: Any) -> NumpyMLPSampler | None:
    """The numpy sampler of a small-CNN actor (module docstring), or ``None`` when the
    actor is anything else (the caller then uses the torch sampler)."""
    layers = _dense_layers(actor)
    if layers is None:
        return None
    return NumpyMLPSampler.from_layers(layers, kind, row_exact=False, **kwargs)
