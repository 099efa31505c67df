"""The oracle of the bad-input suite: refuse, naming the argument, or return the reference.

Every property draws arguments that may be bad (NaN/inf entries, empty batches, bad
hyperparameters, extreme values) and keeps the *names* of the arguments it made bad by
the library's documented rules.  Then exactly one of two things must happen:

* some argument is bad: the call raises ``ValueError`` or ``TypeError`` whose message
  names one of them (:func:`refuses`);
* none is: the call returns, and every number in the result equals a reference computed
  here (:func:`assert_matches`): finite, or ``±inf`` exactly where the true value is
  infinite (a KL to a distribution that rules out an outcome, the log-probability of an
  impossible outcome) or overflows the dtype (or comes within a factor 4 of overflowing
  it, where an intermediate may overflow first).  Never NaN.

Each property runs twice (:func:`properties`): quickly by default (profile
``bad-inputs``) and as a ``slow``-marked test with many more examples (``bad-inputs-slow``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

NAN, INF = math.nan, math.inf
DTYPES = st.sampled_from([torch.float32, torch.float64])
# Tolerances relative to the size of the terms summed: float32 keeps ~7 digits.
TOL = {torch.float32: 2e-4, torch.float64: 1e-9}


def properties(fn: Callable[..., None], **strategies: Any) -> tuple[Any, Any]:
    """``(quick, slow)``: ``fn`` under ``given(**strategies)`` with the two profiles."""
    quick = settings(settings.get_profile("bad-inputs"))(given(**strategies)(fn))
    slow = settings(settings.get_profile("bad-inputs-slow"))(given(**strategies)(fn))
    return quick, pytest.mark.slow(slow)


def refuses(call: Callable[[], Any], bad: Iterable[str]) -> None:
    """``call()`` raises ValueError/TypeError whose message names one of ``bad``."""
    bad = sorted(set(bad))
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert any(name in message for name in bad), (
        f"{type(info.value).__name__}({message!r}) names none of the bad arguments {bad}"
    )


def outcome(bad: Iterable[str], call: Callable[[], Any]) -> Any:
    """Refused (returns None) if ``bad`` names an argument, else the call's result."""
    bad = set(bad)
    name = getattr(call, "__qualname__", "call")
    if bad:
        refuses(call, bad)
        event(f"refused: {', '.join(sorted(bad))}")
        return None
    event(f"returned ({name})")
    return call()


def may_refuse(call: Callable[[], Any], names: str | Iterable[str]) -> Any:
    """A call that may legitimately refuse, naming one of ``names`` (e.g. a singular matrix
    with ``damping=0``): returns its result, or None after checking the message."""
    names = {names} if isinstance(names, str) else set(names)
    try:
        return call()
    except (ValueError, TypeError) as err:
        assert any(n in str(err) for n in names), f"{err!r} names none of {sorted(names)}"
        event(f"refused (allowed): {', '.join(sorted(names))}")
        return None


def assert_matches(out: Any, ref: Any, dtype: torch.dtype, scale: Any = None) -> None:
    """``out`` equals ``ref`` (float64) cast to ``dtype``: same infinities, no NaN,
    finite entries within ``TOL[dtype]·(|ref| + scale)`` (``scale`` bounds the terms summed)."""
    out = torch.as_tensor(out).detach().to(torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert not torch.isnan(out).any(), f"NaN in the result: {out}"
    tol = TOL[dtype]
    top = torch.finfo(dtype).max
    scale = (
        torch.zeros_like(ref) if scale is None else torch.as_tensor(scale).to(ref).expand_as(ref)
    )
    # Within a factor 4 of the largest float an intermediate (σ1²/σ2² before the ½, say)
    # may overflow although the value itself would not: either answer is accepted there.
    near_overflow = ref.abs() > top / 4
    inf_ref = torch.isinf(ref) | (ref.abs() > top)
    ok_inf = torch.isinf(out) & (torch.sign(out) == torch.sign(ref)) & (inf_ref | near_overflow)
    finite = ~inf_ref & ~ok_inf
    assert (torch.isinf(out) <= ok_inf).all(), f"inf where the reference is finite: {out} vs {ref}"
    assert (inf_ref <= ok_inf).all(), f"finite where the reference is infinite: {out} vs {ref}"
    err = (out - ref).abs()[finite]
    bound = (tol * (ref.abs() + scale + torch.finfo(dtype).tiny / tol))[finite]
    assert (err <= bound).all(), f"result {out} differs from the reference {ref}"


def assert_finite(*values: Any) -> None:
    """Tensors and floats that must be finite (records returned as data)."""
    for v in values:
        t = v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
        assert torch.isfinite(t).all(), f"non-finite value {t}"


def special_tensor(
    data: st.DataObject, shape: tuple[int, ...], kinds: list[str], base: float = 2.0
) -> tuple[torch.Tensor, str]:
    """A float64 tensor of ``shape`` with finite entries, then at most one kind of special
    entry drawn from ``kinds`` (e.g. ``"nan"``, ``"+inf"``, ``"-inf"``, ``"huge"``) put at
    drawn positions (half of the draws stay clean).  Returns the tensor and the kind
    (``"clean"`` when none)."""
    n = math.prod(shape)
    values = data.draw(st.lists(st.floats(-base, base), min_size=n, max_size=n))
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    kind = data.draw(st.sampled_from(["clean"] * len(kinds) + kinds))  # clean half the time
    if kind == "clean" or n == 0:
        return t, "clean"
    special = {"nan": NAN, "+inf": INF, "-inf": -INF, "huge": 1e30, "tiny": 1e-30}[kind]
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    t.view(-1)[idx] = special
    return t, kind
