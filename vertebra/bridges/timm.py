"""Any timm model with ``features_only`` as the vertebra backbone ``timm:<model>``.

timm already knows its models' levels (``feature_info``: channels, reductions, the producing
module) and how to dilate the ones that can be dilated (``output_stride``), so the bridge asks timm
for the feature model and only translates: levels are named by the paper's stride (``C2`` at 4,
whatever the dilation), ``out_indices`` are vertebra's (over every level the model has), and a
model that ignores or refuses ``output_stride`` is an :class:`~vertebra.errors.IncompatibleError`
that says so, never a silently undilated map.

Nothing here is imported at discovery: the built-in plugin registers the ``timm`` namespace as a
lazy reference to :func:`resolve`, which imports timm on the first ``timm:...`` lookup.  Weights
come from a local timm checkpoint (the classification model's ``state_dict``, ``.pth`` or
``.safetensors``) through vertebra's strict loader: :attr:`TimmBackbone.weights_key_map` says
which keys are the feature model's and which classifier keys are dropped, by name.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn

from ..backbones._base import OUTPUT_STRIDES, BackboneMeta
from ..errors import ConfigError, IncompatibleError, MissingExtraError, UnknownNameError
from ..features import FeatureInfo, FeatureSpec
from ._foreign import ForeignBackbone, floors_sizes, level_names

__all__ = ["resolve", "timm_backbone", "TimmBackbone", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "vertebra[timm]"'


def _timm() -> Any:
    """timm, or a :class:`MissingExtraError` naming the extra to install."""
    try:
        import timm
    except ImportError as exc:
        raise MissingExtraError(f"timm: backbones need the 'timm' package, which is not installed; run: "
                                f"{INSTALL_HINT}") from exc
    return timm


class _Resolver:
    """The ``timm`` namespace: ``timm:<model>`` for every model ``timm.list_models()`` knows."""

    def __call__(self, name: str) -> Callable[..., Any]:
        timm = _timm()
        if not timm.is_model(name):
            raise UnknownNameError("timm model", name, timm.list_models())
        factory = functools.partial(timm_backbone, name)
        factory.__doc__ = f"timm model {name!r} (features_only) as a vertebra backbone.\n\n{timm_backbone.__doc__}"
        return factory

    def list_names(self, pattern: str) -> list[str]:
        """timm's own listing (``timm.list_models``), filtered by the fnmatch ``pattern``."""
        return [name for name in _timm().list_models() if fnmatch.fnmatchcase(name, pattern or "*")]


resolve = _Resolver()
resolve.__doc__ = "A timm model (features_only) as a vertebra backbone, resolved on use: timm:<model>."


def timm_backbone(model: str, *, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                  in_channels: int = 3, drop_path_rate: float = 0.0) -> "TimmBackbone":
    """A timm model's feature levels as a vertebra backbone (random weights; load a local file with ``weights=``).

    Args:
        model: the timm model name (``resnet18``, ``convnext_atto`` ...).
        out_indices: which of the model's levels to return (all by default).
        output_stride: 8, 16 or 32; timm dilates the later stages where the model supports it.
        in_channels: channels of the input images.
        drop_path_rate: stochastic depth, for the models that have it.
    """
    if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}",
                          path="output_stride")
    options: dict[str, Any] = {"features_only": True, "pretrained": False, "in_chans": in_channels}
    if drop_path_rate:
        options["drop_path_rate"] = drop_path_rate
    if output_stride != 32:
        options["output_stride"] = output_stride
    body = _create(model, options, output_stride)
    info = body.feature_info
    strides = [int(r) for r in info.reduction()]
    if output_stride != 32 and max(strides) != output_stride:
        raise IncompatibleError(f"timm model {model!r} does not dilate to output_stride={output_stride} (its "
                                f"deepest level stays at stride {max(strides)}); use output_stride=32 or a "
                                "model timm can dilate (ResNet, ConvNeXt, EfficientNet, MobileNet ...)")
    names = level_names(_nominal(strides, output_stride))
    levels = [FeatureSpec(n, int(c), s, i) for i, (n, c, s) in enumerate(zip(names, info.channels(), strides))]
    modules = dict(body.named_modules())  # timm flattens stages: 'stages.0' lives as 'stages_0'
    paths = [path if path in modules else path.replace(".", "_") for path in info.module_name()]
    key = (model, output_stride, in_channels)
    if key not in _pads:  # an architecture fact: one small forward per process, not per build
        _pads[key] = floors_sizes(body, FeatureInfo(levels), in_channels)
    return TimmBackbone(model, body, levels, module_paths=paths, out_indices=out_indices,
                        in_channels=in_channels, meta=_meta(model, body),
                        source=f"timm model {model!r}", pad=_pads[key])


_pads: dict[tuple[str, int, int], bool] = {}  # whether the model floors odd sizes (see floors_sizes)


def _create(model: str, options: dict[str, Any], output_stride: int) -> nn.Module:
    timm = _timm()
    try:
        return timm.create_model(model, **options)
    except Exception as exc:  # noqa: BLE001 - whatever timm refuses, said once with the way out
        hint = ("; not every model can be dilated: use output_stride=32" if "output_stride" in options else
                "; choose a model with a features_only mode (vertebra list 'timm:*')")
        raise IncompatibleError(f"timm cannot build {model!r} as a feature model (features_only=True"
                                f"{', output_stride=%d' % output_stride if 'output_stride' in options else ''}): "
                                f"{type(exc).__name__}: {exc}{hint}") from exc


def _nominal(strides: list[int], output_stride: int) -> list[int]:
    """The undilated strides: each dilated stage doubles the stride of the stage before it."""
    nominal: list[int] = []
    for stride in strides:
        dilated = output_stride != 32 and nominal and stride == output_stride and stride <= nominal[-1]
        nominal.append(nominal[-1] * 2 if dilated else stride)
    return nominal


def _meta(model: str, body: nn.Module) -> BackboneMeta:
    config = getattr(body, "pretrained_cfg", None) or {}
    size = config.get("input_size", (3, 224, 224))[-1]
    return BackboneMeta(family=f"timm:{model.split('_')[0]}", default_size=int(size),
                        classifier_dropout=float(config.get("drop_rate", 0.0) or 0.0))


class TimmBackbone(ForeignBackbone):
    """A timm feature model (``features_only=True``) behind vertebra's feature contract."""

    def __init__(self, model: str, body: nn.Module, levels: Sequence[FeatureSpec], **kwargs: Any):
        super().__init__(body, levels, **kwargs)
        self.timm_name = model

    def set_grad_checkpointing(self, enable: bool = True) -> "TimmBackbone":
        """timm's own gradient checkpointing of the feature model (stages recomputed in backward)."""
        self.body.set_grad_checkpointing(bool(enable))
        return self

    @property
    def weights_key_map(self):
        """How a timm *classification* checkpoint of this model loads into the feature model.

        timm's feature model renames flattened stages (``stages.0`` becomes ``stages_0``) and has no
        classifier; the map is derived from the classification model built on the ``meta`` device
        (no memory): every key the feature model holds maps to its name, every other key (the head)
        is a declared drop, reported by :func:`vertebra.weights.load_weights`.
        """
        from ..weights import KeyMap

        with torch.device("meta"):
            full = _timm().create_model(self.timm_name, pretrained=False, in_chans=self.in_channels)
        ours = {key.replace(".", "_"): key for key in self.body.state_dict()}
        rules, drop = [], []
        for key in full.state_dict():
            target = ours.get(key.replace(".", "_"))
            if target is None:
                drop.append(key)
            else:
                rules.append((key, f"body.{target}"))
        return KeyMap(rules=rules, drop=drop)
