"""How a head states what it needs from a backbone, so the registry can check before allocating weights.

A head builder is ``builder(backbone, **kwargs) -> nn.Module``.  Decorating it with :func:`requires`
attaches a function from the head's keyword arguments to :class:`Requirements`; the registry then
(1) passes ``Requirements.backbone_kwargs`` to the backbone factory (e.g. ``output_stride=16`` for
LR-ASPP, so users never pass dilation by hand), (2) builds the backbone on the ``meta`` device and
(3) checks its ``feature_info`` against ``strides`` and ``min_levels`` — raising
:class:`~vertebra.errors.IncompatibleError` that names the head, the backbone, the rule and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Requirements", "requires", "requirements_of"]


@dataclass(frozen=True)
class Requirements:
    """What a head asks of a backbone.

    backbone_kwargs: keyword arguments the backbone must be built with (``{"output_stride": 16}``).
        A user value that contradicts one of them is an ``IncompatibleError``, never silently overridden.
    strides: effective strides that must be present among the returned levels.
    min_levels: how many levels the head consumes at least.
    """

    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    strides: tuple[int, ...] = ()
    min_levels: int = 1


def requires(func: Callable[..., Requirements]) -> Callable[[Callable], Callable]:
    """Decorator for a head builder: ``func(**head_kwargs) -> Requirements``."""

    def attach(builder: Callable) -> Callable:
        builder.vertebra_requirements = func
        return builder

    return attach


def requirements_of(builder: Callable, **head_kwargs: Any) -> Requirements:
    """The requirements a builder declares for these keyword arguments (none declared: accepts all)."""
    func = getattr(builder, "vertebra_requirements", None)
    return Requirements() if func is None else func(**head_kwargs)
