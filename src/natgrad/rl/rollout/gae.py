"""Generalised advantage estimation (Schulman et al., 2016), time-major and vectorised,
and the bootstrap values it needs (:func:`compute_next_values`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from natgrad.rl.rollout.batch import RolloutBatch

__all__ = ["compute_next_values", "gae"]


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a float in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be in [0, 1]")
    return float(value)


def gae(
    rewards: Any,
    values: Any,
    next_values: Any,
    terminated: Any,
    dones: Any,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets by GAE(gamma, lambda).

    With all inputs of shape ``(T, N)`` (time-major; ``(T,)`` is accepted too)::

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lam * (1 - dones_t) * A_{t+1},   A_T = 0
        returns = A + values

    ``next_values[t]`` must be ``V(s_{t+1})``, where ``s_{t+1}`` is the *final*
    observation when the episode ended at ``t`` (see
    :func:`compute_next_values`). So a truncated step bootstraps
    from ``V(final_obs)`` while a terminated one uses 0, and the recursion is cut at
    every episode end (``dones = terminated | truncated``).

    Args:
        rewards: Rewards ``r_t``.
        values: ``V(s_t)``.
        next_values: ``V(s_{t+1})`` as described above.
        terminated: Bool (or 0/1) mask of true terminal steps.
        dones: Bool (or 0/1) mask of episode ends (terminated or truncated); must include
            every terminated step.
        gamma: Discount in ``[0, 1]``.
        lam: GAE lambda in ``[0, 1]``.

    Returns:
        ``(advantages, returns)``, each ``(T, N)`` with the dtype of ``values`` (float
        inputs) and on its device. Computed without autograd.

    Raises:
        ValueError: On mismatched shapes, an empty time axis, ``gamma``/``lam`` outside
            ``[0, 1]`` or a terminated step that is not in ``dones``.
    """
    gamma = _check_unit("gamma", gamma)
    lam = _check_unit("lam", lam)
    v = torch.as_tensor(values)
    if not v.is_floating_point():
        v = v.to(torch.get_default_dtype())
    dev, dt = v.device, v.dtype
    r = torch.as_tensor(rewards, device=dev, dtype=dt)
    nv = torch.as_tensor(next_values, device=dev, dtype=dt)
    term = torch.as_tensor(terminated, device=dev).to(torch.bool)
    done = torch.as_tensor(dones, device=dev).to(torch.bool)
    shapes = {
        "rewards": r.shape,
        "values": v.shape,
        "next_values": nv.shape,
        "terminated": term.shape,
        "dones": done.shape,
    }
    if len(set(shapes.values())) != 1:
        raise ValueError(f"gae inputs must share one (T, N) shape, got {shapes}")
    if v.ndim not in (1, 2) or v.shape[0] == 0:
        raise ValueError(f"gae inputs must have shape (T, N) or (T,) with T > 0, got {v.shape}")
    if bool((term & ~done).any()):
        raise ValueError(
            "dones must include every terminated step (dones = terminated | truncated)"
        )
    with torch.no_grad():
        delta = r + gamma * (~term).to(dt) * nv - v
        coef = (gamma * lam) * (~done).to(dt)
        if dev.type == "cpu":
            # The backward recursion is sequential in time; numpy's per-call overhead is a
            # fraction of torch's, which makes this loop ~5x faster for T = 2048.
            adv = torch.from_numpy(_recurse(delta.numpy(), coef.numpy()))
        else:
            adv = torch.empty_like(delta)
            last = torch.zeros_like(delta[0])
            for t in range(delta.shape[0] - 1, -1, -1):
                last = torch.addcmul(delta[t], coef[t], last)
                adv[t] = last
        return adv, adv + v


def _recurse(delta: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``A_t = delta_t + coef_t * A_{t+1}`` backwards in time, ``A_T = 0``."""
    adv = np.empty_like(delta)
    if delta.ndim == 2 and delta.shape[1] == 1 or delta.ndim == 1:
        # One env: a plain Python loop over floats beats any array call per step.
        d, c = delta.reshape(-1).tolist(), coef.reshape(-1).tolist()
        last = 0.0
        out = [0.0] * len(d)
        for t in range(len(d) - 1, -1, -1):
            last = d[t] + c[t] * last
            out[t] = last
        adv[...] = np.asarray(out, dtype=delta.dtype).reshape(delta.shape)
        return adv
    last = np.zeros_like(delta[0])
    tmp = np.empty_like(last)
    for t in range(delta.shape[0] - 1, -1, -1):
        np.multiply(coef[t], last, out=tmp)
        np.add(delta[t], tmp, out=adv[t])
        last = adv[t]
    return adv


def compute_next_values(
    values_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: RolloutBatch,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``V(s_t)`` and ``V(s_{t+1})`` for every step, in one batched forward pass.

    The next state of step ``t`` in env column ``i`` is ``final_obs[k]`` if the episode
    ended at ``t`` (``final_index[k] == (t, i)``), else ``obs[t + 1, i]``, and
    ``last_obs[i]`` for ``t = T - 1``. Feed the result to :func:`gae`.

    Args:
        values_fn: Maps a float32 ``(M, D)`` tensor to ``(M,)`` or ``(M, 1)`` values.
        batch: The rollout.
        device: Where to evaluate (default: CPU).

    Returns:
        ``(values, next_values)``, each ``(T, N)``, computed under ``torch.no_grad``.
    """
    T, N, D = batch.obs.shape
    x = np.concatenate([batch.obs.reshape(T * N, D), batch.last_obs, batch.final_obs])
    with torch.no_grad():
        v = values_fn(torch.from_numpy(x).to(device)).reshape(-1)
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"values_fn returned {v.shape[0]} values for {x.shape[0]} inputs")
        values = v[: T * N].reshape(T, N)
        nxt = torch.empty_like(values)
        nxt[:-1] = values[1:]
        nxt[-1] = v[T * N : T * N + N]
        fi = torch.from_numpy(batch.final_index).to(v.device)
        nxt[fi[:, 0], fi[:, 1]] = v[T * N + N :]
    return values, nxt
