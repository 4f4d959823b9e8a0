"""The value checks every user-facing option goes through: backbone and head keywords, YAML fields.

Options come from users and YAML files, so a wrong value must be a
:class:`~vertebra.errors.ConfigError` that names the option (a dotted ``path``) and the values it
accepts, never a stack trace from deep inside a layer constructor.  Booleans never pass as numbers:
``True`` is an ``int`` to Python but never what a user meant by ``output_stride: 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["check_choice", "check_range", "check_positive_int", "check_bool", "check_int_list"]


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
