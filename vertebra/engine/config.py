"""The training config: one YAML file, plain data, every key checked before anything is built.

A config is ``model`` (a registry config, handed untouched to ``registry.build_from_config``) plus
``task``, ``data``, ``optimizer``, ``schedule`` and a few flat run settings (``epochs``,
``batch_size``, ``seed``, ``amp`` ...).  The schema is a tree of dataclasses, so the valid keys are
visible in one place and an unknown key is refused with its dotted path and the keys that *are*
valid (``optimizer.momentun -> did you mean 'momentum'?``), instead of being silently ignored.
Two parts are checked where their truth lives, by :func:`vertebra.engine.run.check_config` before
any data is made: ``task`` against the task table and ``model`` by the registry (on the meta device).

``--set key.path=value`` overrides are applied to the raw dict before validation; values are parsed
with ``yaml.safe_load`` so ``--set optimizer.lr=1e-3`` is a float and ``--set ema=null`` turns EMA off.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import yaml

from ..errors import ConfigError
from ..validation import check_hint

__all__ = [
    "TrainConfig", "DataConfig", "AugmentConfig", "AUGMENT_TASKS", "OptimizerConfig", "ScheduleConfig", "QuantizationConfig", "FinetuneConfig",
    "load_train_config", "parse_config", "apply_overrides", "parse_override", "config_to_dict",
]


@dataclass
class AugmentConfig:
    """Training-time augmentation recipes (``data.augment``), all from ``torchvision.transforms.v2``.

    ``hflip`` (every task): horizontal-flip probability.  Classification: ``auto_augment``
    (``none``, ``autoaugment``, ``randaugment``, ``trivialaugment``, ``augmix``), ``random_erasing``
    (probability), ``label_smoothing`` (of the cross-entropy targets), ``mixup_alpha`` /
    ``cutmix_alpha`` (0: off; both: one of them per batch).  Detection / instance: ``scale_jitter``
    (``[low, high]`` factors of ``data.size``; large-scale jitter is ``[0.1, 2.0]``), ``iou_crop``,
    ``zoom_out``.  Semantic: ``scale_range`` (the random crop's share of the image area).  A key
    set for a task it does not apply to is refused (:data:`AUGMENT_TASKS`).
    """

    hflip: float = 0.5
    auto_augment: Literal["none", "autoaugment", "randaugment", "trivialaugment", "augmix"] = "none"
    random_erasing: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    scale_jitter: list | None = None
    iou_crop: bool = False
    zoom_out: bool = False
    scale_range: list = field(default_factory=lambda: [0.5, 1.0])


#: The tasks each ``data.augment`` key applies to (``hflip`` applies to all).
AUGMENT_TASKS = {
    "auto_augment": ("classification",), "random_erasing": ("classification",),
    "label_smoothing": ("classification",), "mixup_alpha": ("classification",), "cutmix_alpha": ("classification",),
    "scale_jitter": ("detection", "instance"), "iou_crop": ("detection", "instance"),
    "zoom_out": ("detection", "instance"), "scale_range": ("semantic",),
}


@dataclass
class DataConfig:
    """Where the images come from.

    ``format``: ``shapes`` generates vertebra's built-in COCO set (into ``root``, default
    ``<out>/data``) and reads it like ``coco``; ``coco`` reads ``instances_*.json`` + image folders
    (detection, instance, and semantic via category masks); ``mask_folder`` reads image/mask folder
    pairs (semantic; ``classes`` names the mask values); ``image_folder`` reads class sub-folders
    (classification).  Without validation paths, ``val_split`` holds out a deterministic fraction of
    the training set (:func:`vertebra.engine.data.split_indices`).  docs/training.md has every key.
    """

    format: Literal["shapes", "coco", "mask_folder", "image_folder"] = "shapes"
    root: str | None = None
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    categories: list | None = None      # semantic: subset (names or ids) mapped to 1..K
    classes: list | None = None         # mask_folder: the names of the mask values 0..K-1 (0: background)
    val_split: float | None = None      # no val_* paths: this fraction of the training set, held out
    size: int | None = 128              # transform size; None keeps the native size
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)   # training-time recipes
    # only for format=shapes
    num_train: int = 64
    num_val: int = 16
    image_size: int = 128
    shapes_seed: int = 0


@dataclass
class OptimizerConfig:
    """SGD, AdamW or RMSProp.  ``eps=None`` takes the optimizer's own default.

    MobileNetV3 / EfficientNet were trained with TF's RMSProp, whose epsilon sits *inside* the
    square root; PyTorch's sits outside, so TF's ``eps=1e-3`` corresponds to roughly ``eps=0.0316``
    here (torchvision's reference recipes use ``eps=0.0316, alpha=0.9``).  See ``optim.py``.
    """

    name: Literal["sgd", "adamw", "rmsprop"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 4e-5
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    alpha: float = 0.9
    eps: float | None = None
    no_weight_decay_norm: bool = True   # no decay on BatchNorm weights and biases


@dataclass
class ScheduleConfig:
    """Per-step learning-rate schedule: linear warmup, then cosine / step / constant."""

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001       # lr multiplier at step 0 of warmup
    min_lr_ratio: float = 0.0          # cosine floor, as a fraction of lr
    milestones: list = field(default_factory=list)   # step: epochs at which lr *= gamma
    gamma: float = 0.1


@dataclass
class QuantizationConfig:
    """Quantization-aware training (``mode: qat``): fine-tune the model with int8 fake quantizers.

    The quantizers go in before the first step, their ranges calibrated on ``calibration_batches``
    training batches; from epoch ``freeze_bn_epoch`` (0-based, null: never) BatchNorm statistics stop
    moving, from ``freeze_quantizers_epoch`` the quantizer ranges stop learning -- the QAT recipe's
    last epochs settle the weights under fixed ranges.  The run writes an int8 artifact.
    """

    mode: Literal["off", "qat"] = "off"
    calibration_batches: int = 4
    freeze_bn_epoch: int | None = None
    freeze_quantizers_epoch: int | None = None


@dataclass
class FinetuneConfig:
    """Start from weights trained for something else: another class count, another head, a backbone.

    ``weights``: a file (``.pth`` / ``.safetensors``: a state dict, a training checkpoint, an
    artifact, a ``best.pth``) or a named checkpoint.  Every tensor whose name and shape fit is
    loaded; the rest of the model keeps its fresh initialisation, and what does not fit is dropped;
    the run logs which (:mod:`vertebra.engine.finetune`).  A file that fits no part of the model is
    tried as weights for its backbone alone (an ImageNet classifier under a detector).
    ``frozen_stages``: the backbone's stem and first N stages get no gradient (and keep their
    BatchNorm statistics); ``batchnorm``: what every BatchNorm of the backbone does while training
    (``train``: update statistics, ``eval``: keep the loaded statistics, ``frozen``:
    FrozenBatchNorm2d, statistics and affine fixed); ``backbone_lr_mult``: the backbone's learning
    rate as a multiple of ``optimizer.lr`` (0.1 is common for pretrained backbones).
    """

    weights: str | None = None
    frozen_stages: int = 0
    batchnorm: Literal["train", "eval", "frozen"] = "train"
    backbone_lr_mult: float = 1.0


@dataclass
class TrainConfig:
    """Everything a run needs.  ``model`` is a registry config (``{head, backbone, ...}``).

    ``model.num_classes`` may be left out: it is filled from the data (categories + background for
    detection / instance / semantic, classes for classification).
    """

    model: dict = field(default_factory=dict)
    task: str = "detection"                    # a name in vertebra.engine.tasks.TASKS (checked there)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 4
    eval_batch_size: int | None = None
    seed: int = 0
    device: str = "auto"                       # auto | cpu | cuda | cuda:N
    threads: int | None = None                 # CPU intra-op threads (None: torch's default, one per core)
    amp: Literal["off", "bf16", "fp16"] = "off"  # CUDA only; ignored (off) on CPU with a warning
    channels_last: bool = False
    clip_grad_norm: float | None = None
    ema: float | None = None                   # EMA decay per step, e.g. 0.999; None = off
    bn_momentum: float | None = None           # override BatchNorm momentum (None keeps the model's);
                                               # short runs from scratch want ~0.1 so running stats keep up
    eval_every: int = 1                        # epochs between evaluations (the last is always evaluated)
    log_every: int = 20                        # optimizer steps between 'step' records in metrics.jsonl
    init_weights: str | None = None            # weights of this very architecture (a previous run), loaded strictly
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)   # weights that fit in part, freezing
    out: str | None = None                     # output folder; the CLI's --out wins
    max_steps_per_epoch: int | None = None     # cap for smoke tests / quick runs
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)   # mode: qat (docs/quantization.md)


# -- loading ---------------------------------------------------------------------------------

def load_train_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML / JSON training config, apply ``--set`` overrides, validate the schema.

    The file is read by :func:`vertebra.registry.load_config`, the one config-file reader, so a
    training config and a model config fail the same way on a missing file or bad YAML.
    """
    from ..registry import load_config

    raw = load_config(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, "
                          f"got {type(raw).__name__}")
    return parse_config(apply_overrides(raw, overrides))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.01"`` -> ``(["optimizer", "lr"], 0.01)``; the value goes through yaml.safe_load."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like key.path=value (e.g. optimizer.lr=0.01)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse the value of override {text!r}: {error}") from None
    return key.split("."), parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """A deep copy of ``raw`` with every ``key.path=value`` set (intermediate mappings created)."""
    result = copy.deepcopy(dict(raw))
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"cannot set {'.'.join(parts)!r}: {where!r} is a value "
                                  f"({child!r}), not a section", path=where)
            node = child
        node[parts[-1]] = value
    return result


def parse_config(raw: Mapping[str, Any]) -> TrainConfig:
    """Validate a plain dict into a :class:`TrainConfig` (unknown keys and bad types -> ConfigError)."""
    config = _build(TrainConfig, raw, path="")
    if not isinstance(config.model, dict) or "head" not in config.model:
        raise ConfigError("the model section must be a registry config with at least a 'head' "
                          "(e.g. {head: lraspp, backbone: {name: mobilenet_v3_large}})", path="model")
    for name in ("epochs", "batch_size", "eval_every", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"must be at least 1, got {getattr(config, name)}", path=name)
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"must be at least 1 or null, got {config.threads}", path="threads")
    if config.ema is not None and not 0.0 < config.ema < 1.0:
        raise ConfigError(f"EMA decay must be between 0 and 1 (e.g. 0.999), got {config.ema}", path="ema")
    if config.bn_momentum is not None and not 0.0 < config.bn_momentum <= 1.0:
        raise ConfigError(f"must be in (0, 1] or null, got {config.bn_momentum}", path="bn_momentum")
    if config.clip_grad_norm is not None and config.clip_grad_norm <= 0:
        raise ConfigError(f"must be positive or null, got {config.clip_grad_norm}", path="clip_grad_norm")
    for path, check, what in _RANGES:
        *sections, name = path.split(".")
        owner = config
        for section in sections:
            owner = getattr(owner, section)
        value = getattr(owner, name)
        if not check(value):
            raise ConfigError(f"must be {what}, got {value!r}", path=path)
    defaults = AugmentConfig()
    for key, tasks in AUGMENT_TASKS.items():
        if getattr(config.data.augment, key) != getattr(defaults, key) and config.task not in tasks:
            raise ConfigError(f"applies to task {' / '.join(tasks)}, and this run's task is {config.task!r}; "
                              f"remove it", path=f"data.augment.{key}")
    if config.data.classes is not None and config.data.format != "mask_folder":
        raise ConfigError(f"names the mask values of format 'mask_folder'; format {config.data.format!r} takes "
                          f"its class names from the data (COCO categories, class folders)", path="data.classes")
    if config.init_weights and config.finetune.weights:
        raise ConfigError("set one of init_weights (this architecture's own weights, loaded strictly) and "
                          "finetune.weights (loads what fits)", path="finetune.weights")
    return config


def _finite(low: float, high: float = math.inf, *, open_low: bool = False, open_high: bool = False,
            optional: bool = False):
    """A check that a number is finite and within ``low``..``high`` (``None`` too when ``optional``)."""
    def check(value: Any) -> bool:
        if value is None:
            return optional
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    return check


def _numbers(check, length: int | None = None):
    return lambda values: (isinstance(values, list) and (length is None or len(values) == length)
                           and all(check(v) for v in values))


#: Ranges checked after the types (one table): a value outside fails here with its path, not as a
#: raw ValueError from torch.optim, numpy or the schedule when the run starts.
_RANGES = (
    ("optimizer.lr", _finite(0, open_low=True), "a finite positive number"),
    ("optimizer.momentum", _finite(0, 1, open_high=True), "a number in [0, 1), e.g. 0.9"),
    ("optimizer.weight_decay", _finite(0), "a finite number >= 0"),
    ("optimizer.betas", _numbers(_finite(0, 1, open_high=True), 2), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    ("optimizer.alpha", _finite(0, 1, open_high=True), "a number in [0, 1), e.g. 0.9 (RMSProp's smoothing)"),
    ("optimizer.eps", _finite(0, optional=True), "a finite number >= 0, or null for the optimizer's default"),
    ("schedule.warmup_epochs", _finite(0), "a finite number of epochs >= 0"),
    ("schedule.warmup_factor", _finite(0, 1), "a number in [0, 1]: the lr multiplier warmup starts from"),
    ("schedule.min_lr_ratio", _finite(0, 1), "a number in [0, 1]"),
    ("schedule.milestones", _numbers(_finite(0)), "a list of epochs >= 0"),
    ("schedule.gamma", _finite(0, open_low=True), "a finite positive number"),
    ("clip_grad_norm", _finite(0, open_low=True, optional=True), "a finite positive number, or null"),
    ("seed", _finite(-(2**63), 2**63, open_high=True), "an integer in [-2**63, 2**63)"),
    ("eval_batch_size", _finite(1, optional=True), "at least 1, or null for batch_size"),
    ("max_steps_per_epoch", _finite(1, optional=True), "at least 1, or null"),
    ("data.size", _finite(1, optional=True), "at least 1, or null for the native size"),
    ("data.num_workers", _finite(0), "0 or more"),
    ("data.val_split", _finite(0, 1, open_low=True, open_high=True, optional=True),
     "a fraction between 0 and 1 (e.g. 0.1), or null when val_images / val_annotations are given"),
    ("data.classes", lambda v: v is None or (isinstance(v, list) and len(v) >= 2 and len(set(map(str, v))) == len(v)
                                             and all(isinstance(n, str) and n for n in v)),
     "a list of at least 2 distinct class names (mask value 0 first), or null"),
    ("data.num_train", _finite(1), "at least 1"),
    ("data.num_val", _finite(1), "at least 1"),
    ("data.image_size", _finite(1), "at least 1"),
    ("data.augment.hflip", _finite(0, 1), "a probability in [0, 1]"),
    ("data.augment.random_erasing", _finite(0, 1), "a probability in [0, 1]"),
    ("data.augment.label_smoothing", _finite(0, 1, open_high=True), "a number in [0, 1), e.g. 0.1"),
    ("data.augment.mixup_alpha", _finite(0), "a finite number >= 0 (0: off; torchvision's recipes use 0.2)"),
    ("data.augment.cutmix_alpha", _finite(0), "a finite number >= 0 (0: off; torchvision's recipes use 1.0)"),
    ("data.augment.scale_jitter", lambda v: v is None or (_numbers(_finite(0, open_low=True), 2)(v) and v[0] <= v[1]),
     "two factors [low, high], 0 < low <= high (large-scale jitter: [0.1, 2.0]), or null"),
    ("data.augment.scale_range", lambda v: _numbers(_finite(0, 1, open_low=True), 2)(v) and v[0] <= v[1],
     "two area fractions [low, high], 0 < low <= high <= 1, e.g. [0.5, 1.0]"),
    ("finetune.frozen_stages", _finite(0), "0 or more (stages of the backbone, counted from the stem)"),
    ("finetune.backbone_lr_mult", _finite(0), "a finite number >= 0 (0 keeps the backbone's weights)"),
    ("quantization.calibration_batches", _finite(1), "at least 1"),
    ("quantization.freeze_bn_epoch", _finite(0, optional=True), "an epoch >= 0, or null for never"),
    ("quantization.freeze_quantizers_epoch", _finite(0, optional=True), "an epoch >= 0, or null for never"),
)


def config_to_dict(config: TrainConfig) -> dict:
    """Plain nested dict (what checkpoints store and ``parse_config`` reads back)."""
    return dataclasses.asdict(config)


# -- the tiny schema checker ------------------------------------------------------------------

def _build(cls: type, raw: Any, path: str) -> Any:
    where = path or "the training config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping of keys for {where}, got {type(raw).__name__} ({raw!r})",
                          path=path or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in raw if key not in fields]
    if unknown:
        raise ConfigError.unknown_keys([str(k) for k in unknown], fields, where=where, path=path or None)
    hints = typing.get_type_hints(cls)
    values = {key: _check(hints[key], value, f"{path}.{key}" if path else key) for key, value in raw.items()}
    return cls(**values)


def _check(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path)
    return check_hint(value, hint, path)
