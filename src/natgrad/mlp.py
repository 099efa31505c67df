"""Plain MLPs: the one check that a module is ``Linear (act Linear)*``, and its layer spec.

Three fast paths exist for the plain MLP, the network most policies and critics are:

* :class:`~natgrad.fisher.MLPFisher` linearises it by hand for Fisher products;
* :class:`~natgrad.rl.policies.sampler.NumpyMLPSampler` runs it in numpy per env step;
* :class:`~natgrad.rl.algos.critic.MLPCriticTrainer` regresses it with a hand-written
  backward pass.

All three read the network through :func:`mlp_spec`, so "is this a plain MLP?" has one
answer.  Anything else (another activation, a layer without bias, a custom module)
gets ``None`` and the generic autograd path.

>>> from torch import nn
>>> spec = mlp_spec(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)))
>>> [layer.activation for layer in spec.layers], spec.in_features, spec.out_features
(['tanh', None], 3, 2)
>>> mlp_spec(nn.Sequential(nn.Linear(3, 8), nn.ELU(), nn.Linear(8, 2))) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["MLPLayer", "MLPSpec", "mlp_spec"]


@dataclass(frozen=True)
class MLPLayer:
    """One ``nn.Linear`` (with bias) and the activation after it (``None`` for the last)."""

    linear: nn.Linear
    activation: str | None


@dataclass(frozen=True)
class MLPSpec:
    """The layers of a plain MLP, in order; the modules are the network's own."""

    layers: tuple[MLPLayer, ...]

    @property
    def in_features(self) -> int:
        return int(self.layers[0].linear.in_features)

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].linear.out_features)


def _activation(module: nn.Module) -> str | None:
    if isinstance(module, nn.Tanh):  # natgrad's faster Tanh subclasses nn.Tanh
        return "tanh"
    if isinstance(module, nn.ReLU):
        return "relu"
    return None


def mlp_spec(module: nn.Module) -> MLPSpec | None:
    """The spec of ``module`` if it is a plain MLP, else ``None``.

    A plain MLP is an ``nn.Sequential`` of ``nn.Linear`` layers with biases, each but
    the last followed by one ``nn.Tanh`` or ``nn.ReLU``, ending with an ``nn.Linear``.
    """
    if not isinstance(module, nn.Sequential) or len(module) == 0:
        return None
    layers: list[MLPLayer] = []
    modules = list(module)
    i = 0
    while i < len(modules):
        lin = modules[i]
        if type(lin) is not nn.Linear or lin.bias is None:
            return None
        if i + 1 == len(modules):
            layers.append(MLPLayer(lin, None))
            break
        act = _activation(modules[i + 1])
        if act is None or i + 2 == len(modules):
            return None
        layers.append(MLPLayer(lin, act))
        i += 2
    return MLPSpec(tuple(layers))
