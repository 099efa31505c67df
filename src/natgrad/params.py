"""Explicit parameter lists: flat-vector helpers and a functional view of a module.

natgrad never picks parameters by name.  You pass the tensors you want to
optimise (any subset of a module's parameters); these helpers move between
that list and one flat vector, and turn a module into a function of the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def as_param_list(params: Iterable[Tensor] | Tensor, name: str = "params") -> list[Tensor]:
    """Validate and list the parameters: tensors, floating point, no duplicates."""
    if isinstance(params, Tensor):
        params = [params]
    out = list(params)
    if not out:
        raise ValueError(
            f"{name} is empty; pass the tensors to differentiate, e.g. model.parameters()"
        )
    seen: set[int] = set()
    for i, p in enumerate(out):
        if not isinstance(p, Tensor):
            raise ValueError(f"{name}[{i}] is a {type(p).__name__}, not a torch.Tensor")
        if not p.is_floating_point():
            raise ValueError(f"{name}[{i}] has dtype {p.dtype}; parameters must be floating point")
        if id(p) in seen:
            raise ValueError(f"{name}[{i}] appears twice; list each parameter once")
        seen.add(id(p))
    return out


def numel(params: Sequence[Tensor]) -> int:
    """Total number of scalars in ``params``."""
    return sum(p.numel() for p in params)


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one 1-d vector (a copy)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors is empty; flatten needs at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor], name: str = "vector") -> list[Tensor]:
    """Split a flat vector into views shaped like ``like``.

    >>> print(*(tuple(t.shape) for t in unflatten(torch.arange(5.0), [torch.zeros(2), torch.zeros(1, 3)])))
    (2,) (1, 3)
    """
    n = numel(like)
    if not isinstance(vector, Tensor) or vector.dim() != 1 or vector.shape[0] != n:
        shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise ValueError(
            f"{name} has shape {shape} but the parameters have {n} entries in all; "
            "pass a 1-d vector of that length (natgrad.params.flatten builds one)"
        )
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def get_flat(params: Sequence[Tensor]) -> Tensor:
    """The current values of ``params`` as one detached flat vector."""
    return flatten([p.detach() for p in params])


@torch.no_grad()
def set_flat(params: Sequence[Tensor], vector: Tensor) -> None:
    """Write a flat vector into ``params`` in place (a NaN or inf entry is refused)."""
    if isinstance(vector, Tensor) and not bool(torch.isfinite(vector).all()):
        raise ValueError("vector contains NaN or inf; parameters must stay finite")
    for p, v in zip(params, unflatten(vector, params), strict=True):
        p.copy_(v)


def functional_model(module: nn.Module, params: Sequence[Tensor]) -> Callable[..., Any]:
    """Turn ``module`` into ``f(param_values, *args, **kwargs)``.

    ``params`` are tensors of ``module`` (identified by identity, not by
    name); ``f`` runs ``module(*args, **kwargs)`` with those tensors replaced by
    ``param_values``.  Parameters not listed keep their current values, as
    constants.  This is what ``torch.func.jvp`` needs.

    Raises:
        ValueError: a tensor in ``params`` is not a parameter or buffer of ``module``.
    """
    params = as_param_list(params)
    names_by_id = {id(t): n for n, t in module.named_parameters(remove_duplicate=False)}
    names_by_id.update({id(t): n for n, t in module.named_buffers(remove_duplicate=False)})
    names = []
    for i, p in enumerate(params):
        if id(p) not in names_by_id:
            raise ValueError(
                f"params[{i}] (shape {tuple(p.shape)}) is not a parameter of the "
                f"{type(module).__name__} given; pass tensors from module.parameters()"
            )
        names.append(names_by_id[id(p)])

    def call(values: Sequence[Tensor], *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(
            module, dict(zip(names, values, strict=True)), args, kwargs, strict=False
        )

    return call
