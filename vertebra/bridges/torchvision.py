"""Every torchvision classification model as the vertebra backbone ``torchvision:<model>``.

torchvision's classifiers do not declare their levels, so the bridge finds them: one forward of the
model on the ``meta`` device (:mod:`._taps`) records where each stride 2..32 ends, and
``torchvision.models.feature_extraction.create_feature_extractor`` returns exactly those modules'
outputs.  ``output_stride`` 8 or 16 dilates the later stages the DeepLab way (:mod:`._dilation`:
strided convolutions become dilated ones), which works for every family whose stages are strided by
convolutions (ResNet, ResNeXt, RegNet, ConvNeXt, EfficientNet, MobileNet ...) and is refused with
the layer that prevents it elsewhere (a strided pooling layer, Swin's patch merging).  The result is
checked on the meta device before the real model is built, so a refusal costs no weights.

Gradient checkpointing splits the feature graph at its levels and recomputes each piece in backward.
Weights: torchvision's own checkpoints (``torch.hub`` files, ``.pth``) load through vertebra's strict
loader; the classifier's keys are dropped by name (:attr:`TorchvisionBackbone.weights_key_map`).
Names are resolved on use (:func:`resolve`); nothing is imported at discovery.
"""

from __future__ import annotations

import fnmatch
import functools
import threading
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbones._base import OUTPUT_STRIDES, BackboneMeta
from ..errors import ConfigError, IncompatibleError, UnknownNameError
from ..features import FeatureSpec
from ._dilation import dilate, stage_modules
from ._foreign import ForeignBackbone, effective_strides, level_names
from ._taps import PROBE_SIZE, Event, Tap, find_taps, finish_order

__all__ = ["resolve", "torchvision_backbone", "TorchvisionBackbone"]


def _classification_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


class _Resolver:
    """The ``torchvision`` namespace: ``torchvision:<model>`` for every classification model."""

    def __call__(self, name: str) -> Callable[..., Any]:
        models = _classification_models()
        if name not in models:
            raise UnknownNameError("torchvision classification model", name, models)
        factory = functools.partial(torchvision_backbone, name)
        factory.__doc__ = f"torchvision model {name!r} as a vertebra backbone.\n\n{torchvision_backbone.__doc__}"
        return factory

    def list_names(self, pattern: str) -> list[str]:
        """torchvision's classification models (``torchvision.models.list_models``) matching ``pattern``."""
        return [name for name in _classification_models() if fnmatch.fnmatchcase(name, pattern or "*")]


resolve = _Resolver()
resolve.__doc__ = "A torchvision classification model as a vertebra backbone, resolved on use: torchvision:<model>."


def torchvision_backbone(model: str, *, out_indices: Sequence[int] | None = None,
                         output_stride: int = 32) -> "TorchvisionBackbone":
    """A torchvision classifier's levels at strides 2..32 as a vertebra backbone (random weights).

    Args:
        model: the torchvision builder name (``resnet18``, ``regnet_x_400mf`` ...).
        out_indices: which of the levels found to return (all by default).
        output_stride: 8, 16 or 32; the later stages are dilated where they are strided by convolutions.
    """
    if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}",
                          path="output_stride")
    from torchvision.models import get_model_builder

    builder = get_model_builder(model)
    plan = _plan(model, builder, output_stride)
    real = _construct(builder)
    for stage, rate in plan.dilations:
        dilate(real, stage, rate)
    from torchvision.models.feature_extraction import create_feature_extractor

    strides = effective_strides([tap.stride for tap in plan.taps], output_stride)
    names = level_names([tap.stride for tap in plan.taps])
    body = create_feature_extractor(real, return_nodes={tap.path: name for tap, name in zip(plan.taps, names)})
    levels = [FeatureSpec(n, tap.channels, s, i) for i, (n, tap, s) in enumerate(zip(names, plan.taps, strides))]
    return TorchvisionBackbone(model, plan.weighted_children, body, levels,
                               module_paths=[tap.path for tap in plan.taps], out_indices=out_indices,
                               channels_last=[tap.channels_last for tap in plan.taps],
                               meta=BackboneMeta(family=f"torchvision:{model}", torchvision_name=model),
                               source=f"torchvision model {model!r}", pad=any(t.floored for t in plan.taps))


class _Plan:
    """What one model needs, found once on the meta device: its taps, the stages to dilate, its head."""

    def __init__(self, taps: list[Tap], dilations: list[tuple[list[str], int]], weighted: tuple[str, ...]):
        self.taps, self.dilations, self.weighted_children = taps, dilations, weighted
        self.events: list[Event] = []  # the meta forward's record (undilated)


_plans: dict[tuple[str, int], _Plan] = {}
_plans_lock = threading.Lock()


def _plan(model: str, builder: Callable[..., nn.Module], output_stride: int) -> _Plan:
    """The plan for ``model`` at ``output_stride``, made once per process (the undilated one first)."""
    with _plans_lock:
        if (model, 32) not in _plans:
            _plans[(model, 32)] = _undilated_plan(model, builder)
        if (model, output_stride) not in _plans:
            _plans[(model, output_stride)] = _dilated_plan(model, builder, _plans[(model, 32)], output_stride)
        return _plans[(model, output_stride)]


def _undilated_plan(model: str, builder: Callable[..., nn.Module]) -> _Plan:
    twin = _meta_twin(builder)
    try:
        events = finish_order(twin)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run at this size has no levels to find
        raise IncompatibleError(f"torchvision model {model!r} cannot be used as a backbone: it does not run on a "
                                f"{PROBE_SIZE[0]}x{PROBE_SIZE[1]} image ({type(exc).__name__}: {exc}); vision "
                                "transformers need their fixed square size and return tokens, not feature maps"
                                ) from exc
    taps = find_taps(events)
    if [tap.stride for tap in taps][-3:] != [8, 16, 32]:
        raise IncompatibleError(f"torchvision model {model!r} has no feature maps at strides 8, 16 and 32 on a "
                                f"{PROBE_SIZE[0]}x{PROBE_SIZE[1]} image (found strides {[t.stride for t in taps]}; "
                                "unpadded convolutions or pools shrink its maps), so it cannot serve as a backbone")
    weighted = tuple(name for name, child in twin.named_children() if any(True for _ in child.parameters()))
    plan = _Plan(taps, [], weighted)
    plan.events = events
    return plan


def _dilated_plan(model: str, builder: Callable[..., nn.Module], base: _Plan, output_stride: int) -> _Plan:
    dilations = [(stage, tap.stride // output_stride)
                 for stage, tap in zip(stage_modules(base.events, [t.path for t in base.taps]), base.taps)
                 if tap.stride > output_stride]
    _check_dilation(model, _meta_twin(builder), dilations, base.taps, output_stride)
    return _Plan(base.taps, dilations, base.weighted_children)


def _construct(builder: Callable[..., nn.Module]) -> nn.Module:
    """``builder(weights=None)``; under ``torch.device("meta")``, built on the CPU and moved when the
    constructor needs real values (RegNet computes its stage widths with tensors)."""
    try:
        return builder(weights=None)
    except (NotImplementedError, RuntimeError):
        if not torch.empty(()).is_meta:
            raise
    with torch.device("cpu"):
        model = builder(weights=None)
    return model.to("meta")


def _meta_twin(builder: Callable[..., nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return _construct(builder)


def _check_dilation(model: str, twin: nn.Module, dilations: list[tuple[list[str], int]], taps: list[Tap],
                    output_stride: int) -> None:
    """Dilate a meta copy and run it: refuse with the reason unless every level lands where it should."""
    for stage, rate in dilations:
        problem = dilate(twin, stage, rate)
        if problem:
            raise IncompatibleError(f"torchvision model {model!r} cannot be dilated to output_stride="
                                    f"{output_stride}: {problem}; use output_stride=32")
    found = {event[0]: event[1] for event in finish_order(twin)}
    for tap, stride in zip(taps, effective_strides([t.stride for t in taps], output_stride)):
        shape = found.get(tap.path, ())
        if [t.stride for t in find_taps([(tap.path, shape, 1, ())])] != [stride]:
            raise IncompatibleError(f"torchvision model {model!r} cannot be dilated to output_stride="
                                    f"{output_stride}: once dilated, {tap.path} gives {shape} instead of a stride-"
                                    f"{stride} map (the stage is strided by a layer that is not a convolution); "
                                    "use output_stride=32")


class TorchvisionBackbone(ForeignBackbone):
    """A torchvision classifier cut at its levels (``create_feature_extractor``), vertebra's contract outside."""

    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> "TorchvisionBackbone":
        """Recompute each stage (the graph between two levels) in backward instead of storing it.

        The feature graph is split at its levels (``torch.fx`` ``split_module``); the pieces call the
        very modules of ``body``, so parameters and the state dict are unchanged.
        """
        self.grad_checkpointing = bool(enable)
        return self

    def _run_body(self, x):
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return self.body(x)
        if "_stages" not in self.__dict__:  # kept out of the submodules: no second copy in the state dict
            self.__dict__["_stages"] = _checkpointed_stages(self.body)
        return self.__dict__["_stages"](x)

    def __init__(self, model: str, weighted_children: tuple[str, ...], body: nn.Module,
                 levels: Sequence[FeatureSpec], **kwargs: Any):
        super().__init__(body, levels, **kwargs)
        self.torchvision_name = model
        self._weighted_children = weighted_children  # the classifier's top-level modules with weights

    @property
    def weights_key_map(self):
        """A torchvision classification checkpoint of this model: its layers under ``body.``, its
        classifier (``fc.``, ``classifier.``, ``head.`` ...) dropped by name and reported."""
        from ..weights import KeyMap

        children = [name for name, _ in self.body.named_children()]
        return KeyMap(rules=[(f"{name}.", f"body.{name}.") for name in children],
                      drop=[f"{name}." for name in self._weighted_children if name not in children])


def _checkpointed_stages(body: nn.Module) -> nn.Module:
    """``body``'s training graph split at its level nodes, each piece run under ``torch.utils.checkpoint``."""
    from torch.fx import GraphModule
    from torch.fx.passes.split_module import split_module

    graph = GraphModule(body, getattr(body, "train_graph", body.graph))
    order = {node: i for i, node in enumerate(graph.graph.nodes)}
    output = next(node for node in graph.graph.nodes if node.op == "output")
    ends = [order[node] for node in output.args[0].values()]
    split = split_module(graph, body, lambda node: next((k for k, end in enumerate(ends) if order[node] <= end),
                                                        len(ends) - 1))
    for node in list(split.graph.nodes):
        if node.op == "call_module":
            with split.graph.inserting_before(node):
                stage = split.graph.get_attr(node.target)
            node.op, node.target, node.args = "call_function", _checkpoint, (stage, *node.args)
    split.recompile()
    return split


def _checkpoint(stage: nn.Module, *args: Any) -> Any:
    return checkpoint(stage, *args, use_reentrant=False)
