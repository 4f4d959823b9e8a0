"""How a head states what it needs from a backbone, and the one function that checks it.

A head builder is ``builder(backbone, **kwargs) -> nn.Module``.  Decorating it with :func:`requires`
attaches a function from the head's keyword arguments to :class:`Requirements`; the registry then
(1) passes ``Requirements.backbone_kwargs`` to the backbone factory (e.g. ``output_stride=16`` for
LR-ASPP, so users never pass dilation by hand), (2) builds the backbone on the ``meta`` device and
(3) checks its levels with :func:`requirements_problem`, raising
:class:`~vertebra.errors.IncompatibleError` that names the head, the backbone, the rule and the fix.

Each rule is declared once (in the head's ``Requirements``) and checked in one place (here), so it
fails with one message however the head is reached: a builder called directly runs the same check
(the decorator does it), the registry calls the builder unchecked after its own check on ``meta``.
Builders therefore only *pick* levels; they never re-check what their requirements declare.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import IncompatibleError
from ..validation import check_choice

__all__ = ["Requirements", "output_stride_requirements", "requires", "requirements_of", "requirements_problem",
           "check_requirements"]


@dataclass(frozen=True)
class Requirements:
    """What a head asks of a backbone.

    backbone_kwargs: keyword arguments the backbone must be built with (``{"output_stride": 16}``).
        A user value that contradicts one of them is an ``IncompatibleError``, never silently overridden.
    backbone_defaults: keyword arguments the backbone is built with *unless the user set them*: a
        head that works at several output strides (DeepLabV3 at 8 or 16) asks for its preferred one
        here and accepts the user's ``backbone.output_stride``; ``output_strides`` then says which
        values it can use, so only those are refused, by the one check below.
    output_strides: strides the deepest returned level may have (``(8, 16)`` for LR-ASPP, whose
        high branch expects a dilated map); empty accepts any.
    strides: effective strides that must be present among the returned levels.
    names: level names the head reads (from a head option such as the detectors' ``levels=``).
    min_levels: how many levels the head consumes at least.
    """

    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    backbone_defaults: Mapping[str, Any] = field(default_factory=dict)
    strides: tuple[int, ...] = ()
    min_levels: int = 1
    output_strides: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    def needs(self) -> list[str]:
        """The requirements as short phrases, for ``vertebra info``."""
        phrases = [f"{key}={value!r}" for key, value in dict(self.backbone_kwargs).items()]
        phrases += [f"{key}={value!r} unless the backbone sets it"
                    for key, value in dict(self.backbone_defaults).items()]
        if self.output_strides:
            phrases.append(f"deepest level at stride {_either(self.output_strides)}")
        if self.strides:
            phrases.append(f"stride(s) {', '.join(map(str, self.strides))}")
        if self.names:
            phrases.append(f"level(s) {', '.join(map(repr, self.names))}")
        phrases.append(f"at least {self.min_levels} level(s)")
        return phrases


PREFERRED_OUTPUT_STRIDE = 16  # what a dilated head gets when neither it nor the backbone's options say


def output_stride_requirements(output_stride: int | None, accepted: tuple[int, ...], *,
                               preset_kwargs: dict | None = None, **rules) -> Requirements:
    """Requirements of a head that works at any of ``accepted`` output strides.

    ``output_stride=None`` (the head option left unset) accepts the user's ``backbone.output_stride``
    (refusing it, naming ``accepted``, when it is not one of them) and asks for 16 when it is unset;
    an explicit head value is a hard requirement.  Shared by the dilated heads (DeepLabV3, LR-ASPP,
    DeepLabV3+, PAN).
    """
    kwargs = dict(preset_kwargs or {})
    if output_stride is None:
        return Requirements(backbone_kwargs=kwargs, backbone_defaults={"output_stride": PREFERRED_OUTPUT_STRIDE},
                            output_strides=accepted, **rules)
    check_choice(output_stride, accepted, "output_stride")
    return Requirements(backbone_kwargs={**kwargs, "output_stride": output_stride}, output_strides=(output_stride,),
                        **rules)


def requires(func: Callable[..., Requirements]) -> Callable[[Callable], Callable]:
    """Decorator for a head builder: ``func(**head_kwargs) -> Requirements``.

    The decorated builder checks its backbone against ``func``'s requirements before it runs, so a
    builder called directly fails exactly as ``registry.build`` would.  The registry, which checks
    on the ``meta`` device first, calls ``builder.vertebra_unchecked`` (the undecorated builder).
    """

    def attach(builder: Callable) -> Callable:
        signature = inspect.signature(builder)

        @functools.wraps(builder)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                backbone, options = _split_arguments(signature, args, kwargs)
            except TypeError:  # a malformed call: let the builder itself say what is wrong
                return builder(*args, **kwargs)
            check_requirements(requirements_of(checked, **options), backbone, head=builder.__name__)
            return builder(*args, **kwargs)

        checked.vertebra_requirements = func
        checked.vertebra_unchecked = builder
        return checked

    return attach


def requirements_of(builder: Callable, **head_kwargs: Any) -> Requirements:
    """The requirements a builder declares for these keyword arguments (none declared: accepts all)."""
    func = getattr(builder, "vertebra_requirements", None)
    return Requirements() if func is None else func(**head_kwargs)


def check_requirements(requirements: Requirements, backbone: Any, *, head: str,
                       backbone_name: str | None = None) -> None:
    """Raise the :class:`IncompatibleError` of :func:`requirements_problem`, if there is one."""
    problem = requirements_problem(requirements, backbone, head=head, backbone_name=backbone_name)
    if problem:
        raise IncompatibleError(problem)


def requirements_problem(requirements: Requirements, backbone: Any, *, head: str,
                         backbone_name: str | None = None) -> str | None:
    """Why ``backbone``'s levels cannot serve ``head`` (the first broken rule, with its fix), or ``None``.

    ``backbone_name`` is the registered name (the registry passes it); a builder called directly
    names the backbone by its ``config["name"]`` when it has one, else by its class.
    """
    config = getattr(backbone, "config", None)
    if backbone_name is None and isinstance(config, Mapping):  # called directly: the registry's name, if any
        backbone_name = config.get("name")
    where = f"backbone {backbone_name!r}" if backbone_name is not None else f"a {type(backbone).__name__}"
    pair = f"head {head!r} on {where}"
    info = getattr(backbone, "feature_info", None)
    if info is None or len(info) == 0:
        return (f"{pair}: the backbone has no feature_info, so no head can know its levels; a backbone "
                f"must follow the feature contract (vertebra.features.BackboneProtocol)")
    levels = _Levels(info, getattr(backbone, "all_levels", None) or info)
    for rule in (_output_stride_problem, _stride_problem, _name_problem, _count_problem):
        problem = rule(requirements, levels, head)
        if problem:
            return f"{pair}: the head {problem}"
    return None


# -- the rules, in the order they are checked ---------------------------------------------------
@dataclass(frozen=True)
class _Levels:
    """The returned levels and every level the architecture offers, as the messages show them."""

    info: Sequence[Any]
    offered: Sequence[Any]

    @property
    def returned(self) -> str:
        return ", ".join(f"{s.name} (stride {s.stride})" for s in self.info)

    @property
    def choices(self) -> str:
        return ", ".join(f"{i}: {s.name} (stride {s.stride})" for i, s in enumerate(self.offered))

    def include_fix(self, what: str) -> str:
        return f"include {what} in backbone.out_indices (levels: {self.choices}) or leave out_indices unset"


def _output_stride_problem(requirements: Requirements, levels: _Levels, head: str) -> str | None:
    wanted = requirements.output_strides
    deepest = levels.info[-1]
    if not wanted or deepest.stride in wanted:
        return None
    if levels.offered[-1].stride in wanted:  # the backbone is dilated right; out_indices cut it short
        fix = levels.include_fix("its deepest level")
    else:
        fix = f"build the backbone with output_stride={_either(wanted)}"
        if "output_stride" in requirements.backbone_kwargs:
            fix += " (registry.build does this for you)"
        elif "output_stride" in requirements.backbone_defaults:
            fix += " (or leave it unset: registry.build then picks " \
                   f"{requirements.backbone_defaults['output_stride']})"
    return (f"needs the deepest level at stride {_either(wanted)}, but the backbone's deepest returned "
            f"level is {deepest.name} (stride {deepest.stride}); {fix}")


def _missing(wanted: tuple, levels: _Levels, attribute: str) -> tuple[list, bool]:
    """The ``wanted`` values of ``attribute`` no returned level has, and whether the backbone offers them all."""
    have = {getattr(spec, attribute) for spec in levels.info}
    missing = [value for value in wanted if value not in have]
    offered = {getattr(spec, attribute) for spec in levels.offered}
    return missing, all(value in offered for value in missing)


def _stride_problem(requirements: Requirements, levels: _Levels, head: str) -> str | None:
    missing, offered = _missing(requirements.strides, levels, "stride")
    if not missing:
        return None
    fix = levels.include_fix("them") if offered else (
        f"this backbone has no such level; choose another backbone "
        f"(registry.compatible({head!r}) lists those that fit)")
    return (f"needs level(s) with stride {', '.join(map(str, missing))}, but the backbone returns "
            f"{levels.returned}; {fix}")


def _name_problem(requirements: Requirements, levels: _Levels, head: str) -> str | None:
    missing, offered = _missing(requirements.names, levels, "name")
    if not missing:
        return None
    fix = levels.include_fix("them") if offered else (
        f"pass levels= with names from {[spec.name for spec in levels.info]} or change the backbone's preset")
    return (f"reads level(s) {', '.join(map(repr, missing))}, but the backbone returns {levels.returned}; "
            f"{fix}")


def _count_problem(requirements: Requirements, levels: _Levels, head: str) -> str | None:
    need = requirements.min_levels
    if len(levels.info) >= need:
        return None
    if len(levels.offered) >= need:
        fix = f"pass backbone.out_indices with at least {need} of the levels ({levels.choices}) or leave it unset"
    else:
        fix = f"choose a backbone with more levels (registry.compatible({head!r}))"
    return (f"needs at least {need} feature levels, but the backbone returns {len(levels.info)}: "
            f"{levels.returned}; {fix}")


def _either(values: Sequence[int]) -> str:
    return " or ".join(map(str, values))


def _split_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple[Any, dict[str, Any]]:
    """``(backbone, head options by name)`` of a builder call, as ``requirements_of`` receives them."""
    bound = signature.bind(*args, **kwargs)
    (_, backbone), *rest = bound.arguments.items()
    options: dict[str, Any] = {}
    for name, value in rest:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            options.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            options[name] = value
    return backbone, options
