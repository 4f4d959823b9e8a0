"""Checkpoint key names: the declared mapping from someone else's names to ours, and THE fit check.

A torchvision classification checkpoint names the stem ``features.0.0.weight``; inside vertebra's
classifier model the same tensor is ``backbone.features.0.0.weight``.  Rather than guess (fuzzy
matching, ``strict=False``), each model *declares* the rewrite as a :class:`KeyMap`: ordered prefix
rules plus the prefixes it deliberately does not load.  Everything else must match exactly.

:func:`compare_keys` is the one comparison of a state dict against a model (names, shapes, and the
BatchNorm counters ``load_state_dict`` itself tolerates).  Both the weights loader
(:func:`check_keys`, a :class:`~vertebra.errors.WeightsError`) and the training-checkpoint resume
(:func:`vertebra.engine.checkpoint.check_architecture`, a ``CheckpointError``) judge its result,
each with the message its reader needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import WeightsError

__all__ = ["KeyMap", "KeyFit", "compare_keys", "check_keys", "KeyCheck"]

_SHOWN = 10  # keys listed per category in an error message


@dataclass(frozen=True)
class KeyMap:
    """How checkpoint key names become this model's names.

    Args:
        rules: ``(source_prefix, target_prefix)`` pairs, tried in order; the first whose source
            prefix starts a key rewrites it.  A key no rule matches keeps its name.
        drop: source prefixes that are deliberately not loaded (e.g. ``"classifier."`` when a
            backbone is loaded from a classification checkpoint).  Checked before the rules;
            every dropped key is reported in :attr:`vertebra.weights.LoadReport.dropped`.

    Example::

        # vertebra's classifier model: backbone.features.* + head.classifier.*
        KeyMap(rules=[("features.", "backbone.features."), ("classifier.", "head.classifier.")])
    """

    rules: Sequence[tuple[str, str]] = ()
    drop: Sequence[str] = ()

    def __post_init__(self) -> None:
        rules = tuple(tuple(rule) for rule in self.rules)
        if isinstance(self.drop, str):
            raise TypeError(f"KeyMap.drop must be a sequence of prefixes, not a string: drop=({self.drop!r},)")
        for rule in rules:
            if len(rule) != 2 or not all(isinstance(part, str) for part in rule) or not rule[0]:
                raise TypeError(f"KeyMap rules are (source_prefix, target_prefix) string pairs with a "
                                f"non-empty source, got {rule!r}")
        if not all(isinstance(prefix, str) and prefix for prefix in self.drop):
            raise TypeError(f"KeyMap.drop must hold non-empty prefix strings, got {self.drop!r}")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "drop", tuple(self.drop))

    @classmethod
    def torchvision_classification(cls, prefix: str = "", classifier: str | None = None) -> "KeyMap":
        """The map from a torchvision classification checkpoint (``features.*`` + ``classifier.*``).

        Args:
            prefix: where this model keeps the backbone's ``features`` (``""`` for a bare Backbone,
                ``"backbone."`` for a model holding it as ``.backbone``).
            classifier: where the classifier's layers live in this model (``"head.classifier."``),
                or ``None`` to drop ``classifier.*`` explicitly (a backbone-only load).
        """
        rules = [("features.", f"{prefix}features.")] if prefix else []
        if classifier is None:
            return cls(rules=rules, drop=("classifier.",))
        return cls(rules=[*rules, ("classifier.", classifier)])

    def map_key(self, key: str) -> str | None:
        """The model's name for checkpoint key ``key``, or ``None`` if the map drops it."""
        if any(key.startswith(prefix) for prefix in self.drop):
            return None
        for source, target in self.rules:
            if key.startswith(source):
                return target + key[len(source):]
        return key

    def apply(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Rename every key; returns ``(renamed state, dropped source keys)``.

        Raises WeightsError if two checkpoint keys would land on the same name (a rule bug).
        """
        renamed: dict[str, Any] = {}
        origin: dict[str, str] = {}
        dropped: list[str] = []
        for key, value in state.items():
            new = self.map_key(key)
            if new is None:
                dropped.append(key)
                continue
            if new in renamed:
                raise WeightsError(f"weights_key_map sends both {origin[new]!r} and {key!r} to {new!r}; "
                                   f"make its rules more specific (rules are tried in order)")
            renamed[new], origin[new] = value, key
        return renamed, dropped


@dataclass(frozen=True)
class KeyFit:
    """How a state dict's names and shapes line up with a model's own (the result of :func:`compare_keys`).

    Attributes:
        missing: model keys the state dict lacks, in the model's order.
        unexpected: state dict keys the model lacks, in the state dict's order.
        mismatched: ``(key, shape in the state dict, shape in the model)`` for shared keys.
        kept: the missing keys ``load_state_dict`` fills in itself: a BatchNorm's
            ``num_batches_tracked`` (older checkpoints predate it; the model keeps its own).
        ignored: the unexpected keys ``load_state_dict`` skips itself: the ``num_batches_tracked``
            a FrozenBatchNorm2d has no buffer for.
        shared: how many keys are in both.
    """

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    kept: tuple[str, ...]
    ignored: tuple[str, ...]
    shared: int

    @property
    def exact(self) -> bool:
        """Every name in both, every shape equal, nothing tolerated."""
        return not (self.missing or self.unexpected or self.mismatched)


def compare_keys(model: nn.Module, state: Mapping[str, Any], own: Mapping[str, Tensor] | None = None) -> KeyFit:
    """Compare ``state`` with ``model``'s own state dict (``own``, when the caller has it already).

    Nothing is copied or changed; the caller decides what is acceptable.
    """
    own = model.state_dict() if own is None else own
    modules = dict(model.named_modules())
    missing = tuple(key for key in own if key not in state)
    unexpected = tuple(key for key in state if key not in own)
    kept = tuple(key for key in missing if isinstance(_owner(modules, key), _BatchNorm)
                 and key.endswith("num_batches_tracked"))
    ignored = tuple(key for key in unexpected if isinstance(_owner(modules, key), FrozenBatchNorm2d)
                    and key.endswith("num_batches_tracked"))
    mismatched = tuple((key, tuple(state[key].shape), tuple(own[key].shape)) for key in own
                       if key in state and tuple(state[key].shape) != tuple(own[key].shape))
    return KeyFit(missing=missing, unexpected=unexpected, mismatched=mismatched, kept=kept, ignored=ignored,
                  shared=sum(1 for key in own if key in state))


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of :func:`check_keys`: what to hand to ``load_state_dict`` and what to report."""

    state: dict[str, Tensor]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    kept: tuple[str, ...]
    ignored: tuple[str, ...]


def check_keys(model: nn.Module, own: Mapping[str, Tensor], state: Mapping[str, Tensor], *,
               strict: bool, source: str, mapped: bool, dropped: Sequence[str] = ()) -> KeyCheck:
    """Judge :func:`compare_keys` for a weights load; raise one WeightsError listing every problem.

    Tolerates what ``load_state_dict`` itself tolerates, so the pre-check never refuses what torch
    would load nor lets through what torch would refuse: a BatchNorm's ``num_batches_tracked``
    may be absent (the model keeps its own), and a FrozenBatchNorm2d ignores one that is present.
    """
    fit = compare_keys(model, state, own)
    missing = [key for key in fit.missing if key not in fit.kept]
    unexpected = [key for key in fit.unexpected if key not in fit.ignored]
    if fit.mismatched or (strict and (missing or unexpected)) or (not strict and fit.shared == 0 and own):
        raise WeightsError(_mismatch_message(model, source, missing, unexpected, fit.mismatched,
                                             mapped=mapped, strict=strict, dropped=dropped))
    loadable = {key: value for key, value in state.items() if key in own}
    loadable.update((key, own[key]) for key in fit.kept)
    return KeyCheck(state=loadable, missing=tuple(missing), unexpected=tuple(unexpected), kept=fit.kept,
                    ignored=fit.ignored)


def _owner(modules: Mapping[str, nn.Module], key: str) -> nn.Module | None:
    return modules.get(key.rpartition(".")[0])


def _mismatch_message(model: nn.Module, source: str, missing: Sequence[str], unexpected: Sequence[str],
                      mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]], *,
                      mapped: bool, strict: bool, dropped: Sequence[str]) -> str:
    counts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(mismatched)} with another shape"]
    lines = [f"{source} does not fit {type(model).__name__} ({', '.join(counts)}"
             + ("; names shown after the model's weights_key_map" if mapped else "") + "); the model was not changed"]
    if missing:
        lines.append("  missing (in the model, not in the file): " + _listing(missing))
    if unexpected:
        lines.append("  unexpected (in the file, not in the model): " + _listing(unexpected))
    if dropped:
        lines.append(f"  the weights_key_map dropped {len(dropped)} file keys on purpose: " + _listing(list(dropped)))
    if mismatched:
        shown = [f"{key} file {list(got)} vs model {list(want)}" for key, got, want in mismatched]
        lines.append("  shape mismatch: " + _listing(shown))
    if not strict and not mismatched:
        lines.append("  no tensor name is shared with the model: nothing would load")
    hint = _prefix_hint(missing, unexpected)
    if hint:
        lines.append("  hint: " + hint)
    elif mismatched:
        lines.append("  hint: the checkpoint was made for another variant or class count; build the model "
                     "it was trained with")
    return "\n".join(lines)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _prefix_hint(missing: Iterable[str], unexpected: Iterable[str]) -> str | None:
    """If most unexpected keys are missing keys under another prefix, say which rules would fix it."""
    by_suffix: dict[str, str] = {}
    for key in missing:
        parts = key.split(".")
        for cut in range(len(parts) - 1):  # keep at least two trailing components
            by_suffix.setdefault(".".join(parts[cut:]), ".".join(parts[:cut]))
    pairs: Counter[tuple[str, str]] = Counter()
    unexpected = list(unexpected)
    for key in unexpected:
        parts = key.split(".")
        for cut in range(len(parts) - 1):
            target = by_suffix.get(".".join(parts[cut:]))
            if target is None:
                continue
            source = ".".join(parts[:cut])
            if not source:  # a rule needs a non-empty source prefix: anchor it on the first component
                source, target = parts[0], (f"{target}.{parts[0]}" if target else parts[0])
            if source != target:
                pairs[(source + ".", (target + ".") if target else "")] += 1
            break
    rules = [pair for pair, _ in pairs.most_common(3)]
    if not rules or sum(pairs[pair] for pair in rules) * 2 < len(unexpected):
        return None
    return ("the file's names look like the model's under other prefixes; declare on the model "
            f"weights_key_map = KeyMap(rules={rules!r})")
