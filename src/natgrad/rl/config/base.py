"""The shared machinery of natgrad's typed configs: validation, plain-value round trips,
field docstrings and command-line parsing.

Each concern has one dataclass (:mod:`~natgrad.rl.config.algo`,
:mod:`~natgrad.rl.config.policy`, :mod:`~natgrad.rl.config.rollout`,
:mod:`~natgrad.rl.config.run`). Every field carries a docstring (the string literal
under it); the command line is generated from the fields (``natgrad train --max-kl
0.02`` or ``--set max_kl=0.02``) and ``natgrad train --help-config`` prints them.
Values are validated at construction: a bad value raises ``ValueError`` naming the
field, its value and the allowed range.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
from dataclasses import dataclass, fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["ConfigBase", "parse_value"]

C = TypeVar("C", bound="ConfigBase")


@dataclass
class ConfigBase:
    """Validation at construction, plain-value round trips and field docstrings."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and _is_tuple_hint(get_type_hints(type(self))[f.name]):
                setattr(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Check every field's type; subclasses add range checks."""
        hints = get_type_hints(type(self))
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

    def to_dict(self) -> dict[str, Any]:
        """The constructor fields as plain values (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init}

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied (unknown fields are an error)."""
        names = self.field_names()
        for key in changes:
            if key not in names:
                raise ValueError(_unknown_field_message(type(self), key))
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from plain values; an unknown key is an error that suggests close names."""
        names = cls.field_names()
        for key in data:
            if key not in names:
                raise ValueError(_unknown_field_message(cls, key))
        return cls(**data)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """The docstring of every field, read from the class source."""
        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
            body = tree.body[0].body  # type: ignore[attr-defined]
            for node, nxt in zip(body, body[1:], strict=False):
                if (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
        return docs


# --- helpers -------------------------------------------------------------------------
def _bad(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"invalid config: {name}={value!r}; it must be {allowed}")


def _positive_int(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _bad(name, v, "an int >= 1")


def _choice(cfg: Any, name: str, options: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in options:
        _bad(name, getattr(cfg, name), f"one of {', '.join(map(repr, options))}")


def _optional(hint: Any) -> tuple[Any, bool]:
    """``(inner, True)`` for ``X | None``, else ``(hint, False)``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _is_tuple_hint(hint: Any) -> bool:
    return get_origin(_optional(hint)[0]) is tuple


def _hint_name(hint: Any) -> str:
    inner, optional = _optional(hint)
    name = getattr(inner, "__name__", str(inner))
    return f"{name} or None" if optional else name


def _check_type(name: str, value: Any, hint: Any) -> None:
    hint, optional = _optional(hint)
    if optional and value is None:
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            _bad(name, value, "a finite number")
    elif hint is str:
        ok = isinstance(value, str)
    elif get_origin(hint) is tuple:
        ok = isinstance(value, tuple)
    else:
        ok = True
    if not ok:
        _bad(name, value, f"of type {_hint_name(hint)}" + (" or None" if optional else ""))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _unknown_field_message(cls: type, key: str) -> str:
    import difflib

    names = [f.name for f in fields(cls) if f.init]
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid fields: {', '.join(names)}"
    return f"unknown config field {key!r} for {cls.__name__}{hint}"


def parse_value(cls: type[ConfigBase], name: str, text: str) -> Any:
    """Parse the command-line text for field ``name`` by the field's type.

    ``X | None`` fields read ``none`` (or ``auto``) as ``None``.
    """
    hints = get_type_hints(cls)
    if name not in cls.field_names():
        raise ValueError(_unknown_field_message(cls, name))
    hint, optional = _optional(hints[name])
    low = text.strip().lower()
    try:
        if optional and low in ("none", "auto", ""):
            return None
        if hint is bool:
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(float(text)) if "e" in low else int(text)
        if hint is float:
            return float(text)
        if get_origin(hint) is tuple:
            return tuple(int(x) for x in text.replace("(", "").replace(")", "").split(",") if x)
        return text
    except ValueError:
        raise ValueError(
            f"invalid config: {name}={text!r} cannot be read as {_hint_name(hints[name])}"
        ) from None
