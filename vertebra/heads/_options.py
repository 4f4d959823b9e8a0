"""Small checks and declarations shared by the head builders.

Head keyword arguments come from users and YAML files, so a wrong value must be a
:class:`~vertebra.errors.ConfigError` naming the argument and the allowed values, never a stack trace
from deep inside a layer constructor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__: list[str] = []


def check_choice(value: Any, allowed: Sequence[Any], name: str) -> Any:
    """``value`` if it is one of ``allowed`` (booleans never pass for integers)."""
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}", path=name)
    return value


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", path=name)
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", path=name)
    return value


def check_int_list(value: Any, name: str, *, length: int | None = None) -> tuple[int, ...]:
    """A non-empty list/tuple of positive integers (``length`` of them when given)."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (length is not None and len(value) != length):
        size = f"{length} " if length is not None else ""
        raise ConfigError(f"must be a list of {size}positive integers, got {value!r}", path=name)
    return tuple(value)


def torchvision_dense_key_map():
    """torchvision's segmentation models keep the bare ``features`` layers as ``backbone.N``;
    vertebra keeps the whole Backbone at ``backbone`` (``backbone.features.N``).  Heads keep
    torchvision's names (``classifier``, ``aux_classifier``), so one rule is the whole map."""
    from ..weights import KeyMap

    return KeyMap(rules=[("backbone.", "backbone.features.")])


def torchvision_detection_key_map():
    """torchvision's detection models wrap ``features`` in an IntermediateLayerGetter at
    ``backbone.body.N``; vertebra's FPN wrapper keeps the Backbone there (``backbone.body.features.N``).
    FPN, RPN and ROI heads are torchvision's own modules under torchvision's names."""
    from ..weights import KeyMap

    return KeyMap(rules=[("backbone.body.", "backbone.body.features.")])
