"""Fine-tuning from the config: weights that fit in part, frozen stages, BatchNorm mode, backbone lr.

The config's ``finetune:`` section (:class:`~vertebra.engine.config.FinetuneConfig`) does what the
Python API did by hand (``load_weights(model.backbone, ...)``): a 1000-class ImageNet classifier
becomes a 2-class one, a COCO-91 detector a 3-class one, from the config alone.

Two halves, because they run at different times:

* :func:`apply_structure` -- frozen stages and the BatchNorm mode change the model itself (which
  parameters train, FrozenBatchNorm2d swaps in), so every build of the run's model does it: the
  fresh run, the resumed one, ``vertebra eval``.  Their checkpoints then fit each other exactly.
  ``batchnorm: eval`` is a mode the loop re-applies after each ``model.train()``;
* :func:`load_start_weights` -- only a run that starts fresh reads the starting weights (a resumed
  run has better ones in ``last.pth``).  The weights loader does the reading (named checkpoints,
  hashes, containers, key maps, ``weights_only``) in its fine-tuning mode: every tensor whose name
  and shape fit loads, the rest keeps the model's fresh initialisation, and the
  :class:`FinetuneReport` says which, by module.  A file that fits no part of the model is tried as
  weights of its backbone alone (an ImageNet classifier under a detector: ``features.*`` map, the
  classifier is dropped), then as another vertebra model whose backbone is the same (a segmenter's
  run under a detector: its ``backbone.*`` loads, its head is dropped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..backbones import Backbone
from ..errors import ConfigError, WeightsError
from ..norms import freeze_batchnorm
from ..weights import KeyMap, load_weights
from .config import TrainConfig

__all__ = ["FinetuneReport", "find_backbone", "apply_structure", "load_start_weights", "backbone_parameters"]


def find_backbone(model: nn.Module) -> tuple[str, Backbone] | None:
    """``(name, module)`` of the vertebra Backbone inside ``model`` (the first one), or None."""
    return next(((name, module) for name, module in model.named_modules() if isinstance(module, Backbone)), None)


def _backbone_settings(config: TrainConfig) -> list[str]:
    """The finetune keys set away from their defaults that act on the backbone."""
    settings = config.finetune
    return [key for key, on in (("frozen_stages", settings.frozen_stages > 0),
                                ("batchnorm", settings.batchnorm != "train"),
                                ("backbone_lr_mult", settings.backbone_lr_mult != 1.0)) if on]


def apply_structure(model: nn.Module, config: TrainConfig) -> list[nn.Module]:
    """Freeze the first ``frozen_stages`` stages and set the backbone's BatchNorm mode (in place).

    Returns the BatchNorm layers that ``batchnorm: eval`` keeps in eval mode: a mode, not a module,
    so the training loop re-applies it after every ``model.train()``.
    """
    settings = config.finetune
    wanted = _backbone_settings(config)
    if not wanted:
        return []
    found = find_backbone(model)
    if found is None:
        raise ConfigError(f"{', '.join(wanted)} need a vertebra backbone inside the model, and "
                          f"{type(model).__name__} has none", path=f"finetune.{wanted[0]}")
    _, backbone = found
    levels = len(backbone.all_levels)
    if settings.frozen_stages > levels:
        raise ConfigError(f"this backbone has {levels} stages, got {settings.frozen_stages}",
                          path="finetune.frozen_stages")
    if settings.frozen_stages:    # a frozen stage does not move its statistics either
        backbone.freeze(settings.frozen_stages, bn="eval" if settings.batchnorm == "train" else settings.batchnorm)
    if settings.batchnorm == "frozen":
        freeze_batchnorm(backbone)
    if settings.batchnorm == "eval":
        return [module for module in backbone.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    return []


def backbone_parameters(model: nn.Module) -> set[int]:
    """The ``id`` of every parameter of the model's backbone (empty without one)."""
    found = find_backbone(model)
    return {id(p) for p in found[1].parameters()} if found else set()


@dataclass(frozen=True)
class FinetuneReport:
    """What fine-tuning loaded, re-initialised and dropped, counted by module (the tensor's owner)."""

    source: str
    target: str                                        # "model" or the backbone's name inside it
    loaded: dict[str, int] = field(default_factory=dict)
    reinitialised: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    mismatched: tuple[str, ...] = ()                   # "key file [..] vs model [..]"

    def lines(self) -> list[str]:
        """The report as the run prints it."""
        def listing(counts: dict[str, int]) -> str:
            return ", ".join(f"{name} ({count})" for name, count in counts.items()) or "none"
        into = "the model" if self.target == "model" else f"the backbone ({self.target})"
        return [f"fine-tuning from {self.source} into {into}:",
                f"  loaded {sum(self.loaded.values())} tensors: {listing(_coarse(self.loaded))}",
                f"  re-initialised {sum(self.reinitialised.values())}: {listing(self.reinitialised)}",
                f"  dropped {sum(self.dropped.values())} from the file: {listing(self.dropped)}"
                + (f" (shapes: {'; '.join(self.mismatched[:6])})" if self.mismatched else "")]

    def record(self) -> dict[str, Any]:
        """The ``finetune`` record of ``metrics.jsonl``."""
        return {"kind": "finetune", "source": self.source, "target": self.target, "loaded": self.loaded,
                "reinitialised": self.reinitialised, "dropped": self.dropped, "mismatched": list(self.mismatched)}


#: Where another vertebra model keeps its backbone (a detector's FPN wraps it as ``backbone.body``,
#: every other head holds it as ``backbone``): a segmenter's run starts a detector, or the reverse.
_OTHER_MODELS_BACKBONE = KeyMap(rules=[("backbone.body.", ""), ("backbone.", "")])


def load_start_weights(model: nn.Module, config: TrainConfig) -> FinetuneReport | None:
    """Load ``init_weights`` (strictly) or ``finetune.weights`` (what fits) into a fresh run's model."""
    if config.init_weights:
        load_weights(model, config.init_weights)
        return None
    source = config.finetune.weights
    if not source:
        return None
    try:
        return _report(model, "model", "", load_weights(model, source, strict=False, mismatched="skip"))
    except WeightsError as whole:
        found = find_backbone(model)
        if found is None:
            raise
        name, backbone = found
        for key_map in (None, _OTHER_MODELS_BACKBONE):
            try:
                report = load_weights(backbone, source, strict=False, mismatched="skip", key_map=key_map)
            except WeightsError:
                continue
            return _report(model, name, f"{name}.", report)
        raise whole from None            # fits nowhere: the whole model's reasons are the useful ones


def _report(model: nn.Module, target: str, prefix: str, report: Any) -> FinetuneReport:
    """Count a LoadReport by module, in the whole model's names (``prefix``: where it was loaded)."""
    own = list(model.state_dict())
    kept = {prefix + key for key in report.kept}            # num_batches_tracked left as they were
    not_loaded = {prefix + key for key in (*report.missing, *(key for key, _, _ in report.mismatched))}
    loaded = [key for key in own if key.startswith(prefix) and key not in not_loaded and key not in kept]
    taken = set(loaded) | kept
    reinitialised = [key for key in own if key not in taken]
    dropped = [*report.unexpected, *report.dropped, *(key for key, _, _ in report.mismatched)]
    return FinetuneReport(
        source=report.source, target=target, loaded=_by_module(loaded), reinitialised=_by_module(reinitialised),
        dropped=_by_module(dropped),
        mismatched=tuple(f"{prefix}{key} file {list(got)} vs model {list(want)}" for key, got, want in report.mismatched))


def _by_module(keys: list[str]) -> dict[str, int]:
    """``{owner module: tensor count}`` in first-seen order (``head.classifier.3.weight`` -> ``head.classifier.3``)."""
    return dict(Counter(key.rpartition(".")[0] or key for key in keys))


def _coarse(counts: dict[str, int], depth: int = 2) -> dict[str, int]:
    """Counts summed over the first ``depth`` name parts: the loaded part is most of the model."""
    summed: Counter[str] = Counter()
    for name, count in counts.items():
        summed[".".join(name.split(".")[:depth])] += count
    return dict(summed)
