"""The value checks every user-facing option goes through: backbone and head keywords, YAML fields.

Options come from users and YAML files, so a wrong value must be a
:class:`~vertebra.errors.ConfigError` that names the option (a dotted ``path``) and the values it
accepts, never a stack trace from deep inside a layer constructor.  Booleans never pass as numbers:
``True`` is an ``int`` to Python but never what a user meant by ``output_stride: 1``.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["check_choice", "check_range", "check_positive_int", "check_bool", "check_int_list",
           "matches_hint", "check_hint"]


def check_choice(value: Any, allowed: Sequence[Any], path: str, *, hint: str = "") -> Any:
    """``value`` if it is one of ``allowed``; otherwise a :class:`ConfigError` listing them."""
    if isinstance(value, bool) or value not in allowed:
        message = f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        raise ConfigError(message + (f" ({hint})" if hint else ""), path=path)
    return value


def check_range(value: Any, path: str, *, low: float, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """``value`` as a float if it is a real number in the stated interval (NaN never is)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value >= low if low_inclusive else value > low)
        if high is not None:
            ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = ("[" if low_inclusive else "(") + f"{low}, " + ("inf)" if high is None else
                                                                 f"{high}" + ("]" if high_inclusive else ")"))
        raise ConfigError(f"must be a number in {interval}, got {value!r}", path=path)
    return float(value)


def check_positive_int(value: Any, path: str, *, minimum: int = 1) -> int:
    """``value`` if it is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", path=path)
    return value


def check_bool(value: Any, path: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", path=path)
    return value


def check_int_list(value: Any, path: str, *, length: int | None = None) -> tuple[int, ...]:
    """A non-empty list/tuple of positive integers (``length`` of them when given), as a tuple."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (length is not None and len(value) != length):
        size = f"{length} " if length is not None else ""
        raise ConfigError(f"must be a list of {size}positive integers, got {value!r}", path=path)
    return tuple(value)


# -- values against type hints ----------------------------------------------------------------------
def matches_hint(value: Any, hint: Any) -> bool | None:
    """True/False when ``value`` can be judged against ``hint`` simply, ``None`` when it cannot.

    The one reading of a type hint: the registry asks it whether a keyword argument plausibly has the
    annotated type (to blame the right argument for a ``TypeError``), :func:`check_hint` whether a
    YAML value fits a schema field.  Unknown hints give ``None`` rather than a guess.
    """
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        verdicts = [matches_hint(value, arg) for arg in typing.get_args(hint)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return None
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if hint in (list, tuple) and isinstance(value, (list, tuple)):
        return True
    try:
        return isinstance(value, hint)
    except TypeError:
        return None


#: What a value of each plain schema type looks like, for the message when one does not fit.
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping"}


def check_hint(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against a schema field's ``hint`` (a plain type, ``X | None``, ``Literal``,
    ``list[...]``, ``dict[...]``), as the field stores it; otherwise a :class:`ConfigError`.

    YAML 1.1 quirks are undone first: a bare ``off`` reads as ``False`` (accepted where ``"off"`` is
    a choice) and ``1e-3`` without a dot as a string (accepted where a number is expected).
    Numbers come back as floats, lists as lists, mappings as deep copies.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return check_hint(value, option, path)
            except ConfigError as error:
                errors.append(error)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"expected {_describe_union(args)}, got {value!r}", path=path)
    if origin is Literal:
        if value is False and "off" in args:
            return "off"
        return check_choice(value, args, path)
    plain = origin or hint
    if plain not in _EXPECTED:
        raise TypeError(f"schema type {hint!r} at {path} is not handled")  # a bug in the schema, not user input
    if plain is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not matches_hint(value, Mapping if plain is dict else plain):
        raise ConfigError(f"expected {_EXPECTED[plain]}, got {value!r}", path=path)
    if plain is float:
        return float(value)
    if plain is list:
        return list(value)
    if plain is dict:
        return copy.deepcopy(dict(value))
    return value


def _describe_union(args: tuple) -> str:
    names = [getattr(a, "__name__", str(a)) for a in args if a is not type(None)]
    return " or ".join(names) + (" or null" if type(None) in args else "")
