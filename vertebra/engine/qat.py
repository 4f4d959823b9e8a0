"""Quantization-aware training: the training loop fine-tunes a model with int8 fake quantizers.

Post-training int8 (``vertebra quantize``) sets ranges once and keeps the float weights; QAT lets
the weights adapt to the rounding, which is how MobileNetV3's int8 models keep their accuracy.
NNCF does the work (its PyTorch backend inserts trainable fake quantizers where OpenVINO will run
int8, and OpenVINO converts the fine-tuned model straight to its int8 IR); this module only wires
it into the run:

* before the first step (and again on ``--resume``, before the checkpoint loads into it) the eval
  model is traced with the eager speed-ups detached (:func:`vertebra.inference.detach_eager`: NNCF
  must see the convolutions a fold would hide) and calibrated on training images, under a forked
  RNG so the run's random stream is the one it would have been;
* each epoch from ``freeze_bn_epoch`` keeps BatchNorm in eval mode (statistics frozen) and from
  ``freeze_quantizers_epoch`` stops the quantizer ranges' gradients;
* the artifact the run writes embeds the int8 OpenVINO graph of the fine-tuned model, next to the
  float weights (the model's own keys only, so the artifact still rebuilds the float architecture).

QAT covers the classifier and the dense heads; detectors and EMA are refused when the run starts
(:func:`check_qat`), not after hours of training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..inference import detach_eager

__all__ = ["QAT_TASKS", "QatRun", "check_qat", "prepare_qat", "apply_freezes", "quantizer_ranges", "float_state",
           "int8_graph"]

QAT_TASKS = ("classification", "semantic")


def check_qat(config: Any) -> None:
    """Refuse a QAT run this module cannot do, before data or model are set up."""
    if config.quantization.mode != "qat":
        return
    from ..quantization.openvino_int8 import require_quantize_extra

    if config.task not in QAT_TASKS:
        raise ConfigError(f"quantization-aware training covers tasks {', '.join(QAT_TASKS)}, not "
                          f"{config.task!r}; quantize a trained detector with 'vertebra quantize' (post-training)",
                          path="quantization.mode")
    if config.ema is not None:
        raise ConfigError("quantization-aware training keeps one model; set ema: null", path="ema")
    require_quantize_extra()


def calibration_images(dataset: Any, count: int) -> list[Tensor]:
    """The first ``count`` training images as ``(1, 3, H, W)``, without moving the global RNG."""
    with torch.random.fork_rng():
        return [dataset[index][0][None] for index in range(min(count, len(dataset)))]


def prepare_qat(model: nn.Module, images: Sequence[Tensor]) -> tuple[nn.Module, frozenset[str]]:
    """``model`` with NNCF fake quantizers calibrated on ``images``, and the keys of its float state."""
    import nncf

    float_keys = frozenset(model.state_dict())
    detach_eager(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dataset = nncf.Dataset([image.to(device) for image in images])
    with torch.no_grad():
        quantized = nncf.quantize(model, dataset, subset_size=len(images))
    return quantized.train(was_training), float_keys


def apply_freezes(model: nn.Module, settings: Any, epoch: int, float_keys: frozenset[str]) -> None:
    """After ``model.train()``: BatchNorm statistics and quantizer ranges frozen from their epochs on."""
    if settings.freeze_bn_epoch is not None and epoch >= settings.freeze_bn_epoch:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    frozen = settings.freeze_quantizers_epoch is not None and epoch >= settings.freeze_quantizers_epoch
    for parameter in quantizer_ranges(model, float_keys):
        parameter.requires_grad_(not frozen)


def quantizer_ranges(model: nn.Module, float_keys: frozenset[str]) -> list[nn.Parameter]:
    """The trainable parameters NNCF added (the quantizers' scales and ranges; its integer settings,
    such as the number of levels, are parameters too but never learn)."""
    return [p for name, p in model.named_parameters() if name not in float_keys and p.is_floating_point()]


def float_state(model: nn.Module, float_keys: frozenset[str]) -> dict[str, Tensor]:
    """The float model's part of a QAT model's state (what ``build_from_config`` loads strictly)."""
    return {name: value for name, value in model.state_dict().items() if name in float_keys}


def int8_graph(model: nn.Module, example: Tensor, *, epoch: int) -> Any:
    """The int8 OpenVINO graph of a QAT model, as an :class:`~vertebra.weights.artifact.EmbeddedGraph`."""
    from ..deploy.embedded import compile_embedded
    from ..deploy.export import deployable
    from ..quantization.openvino_int8 import convert_module, graph_files
    from ..quantization.report import count_runtime_ops, count_weighted_modules
    from ..weights.artifact import EmbeddedGraph

    was_training = model.training
    model.eval()
    try:
        converted = convert_module(deployable(model), example.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    graph = EmbeddedGraph("openvino", "int8", graph_files(converted),
                          info={"backend": "openvino", "method": "quantization-aware training (NNCF)",
                                "epoch": epoch, "weighted_modules": count_weighted_modules(model)})
    graph.info["ops"] = count_runtime_ops(compile_embedded(graph)).to_dict()
    return graph


class QatRun:
    """The QAT side of a training run: the quantized model, and what each epoch and artifact needs."""

    def __init__(self, model: nn.Module, config: Any, dataset: Any):
        self.settings = config.quantization
        images = calibration_images(dataset, self.settings.calibration_batches * config.batch_size)
        self.model, self.float_keys = prepare_qat(model, images)
        self.example = images[0]

    def on_train(self, epoch: int) -> None:
        apply_freezes(self.model, self.settings, epoch, self.float_keys)

    def artifact_parts(self, model: nn.Module, epoch: int) -> tuple[dict[str, Tensor], Any]:
        """``(float state, int8 graph)`` of ``model`` for the run's artifact."""
        return float_state(model, self.float_keys), int8_graph(model, self.example, epoch=epoch)
