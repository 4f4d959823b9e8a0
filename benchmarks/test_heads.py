"""Throughput of every registered head on MobileNetV3-Large and EfficientNet-B0, inference and one training step.

References: on MobileNetV3-Large, torchvision's own models (our heads with ``preset="torchvision"``,
which reproduce them exactly: ``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``,
``fasterrcnn_mobilenet_v3_large_fpn``, and torchvision's ``MaskRCNN`` on that same backbone);
smp's decoders on timm's encoder of the same backbone (``tu-...``).  A head with no reference on a
backbone (detection on EfficientNet-B0) is still timed; it just has no ratio, so nothing gates it.
"""

from __future__ import annotations

import pytest

from _cases import HEAD_BACKBONES, NUM_CLASSES, head_kwargs, head_references, input_size, task_of
from _harness import count_flops, parameter_count, side_by_side
from _steps import calibrate_batchnorm, inference_step, make_inputs, maybe_compile, place, train_step
from conftest import variant_params

from vertebra import registry
from vertebra.weights import load_weights

HEADS = [head for head in registry.list_heads() if head != "classifier"]
PAIRS = [pytest.param(head, backbone, id=f"{head}-{backbone}") for backbone in HEAD_BACKBONES for head in HEADS]
SMOKE_BACKBONES = ("mobilenet_v3_large",)  # CI's smoke run: every head once, on the backbone with references


def _setup(benchmark, settings, variant, head, backbone, step):
    if settings.mode == "smoke" and backbone not in SMOKE_BACKBONES:
        pytest.skip("the smoke run covers every head on mobilenet_v3_large; quick and full modes run both backbones")
    task = task_of(head)
    batch = settings.detection_batch if task in ("boxes", "masks") else settings.head_batch
    light = settings.mode != "full"
    size = input_size(head, settings.head_size)
    ours = registry.build(head, backbone=backbone, **head_kwargs(head, backbone, size, light))
    references = {name: build(size, light) for name, build in head_references(head, backbone).items()}
    benchmark.group = f"{head} {step} [{variant.name}]"
    benchmark.extra_info.update(variant=variant.name, head=head, backbone=backbone, batch=batch,
                                same_architecture={name: parameter_count(ours) == parameter_count(ref)
                                                   for name, ref in references.items()})
    if benchmark.extra_info["same_architecture"].get("torchvision"):
        # The same weights, so data-dependent work (proposals kept, NMS) is the same on both sides.
        load_weights(ours, references["torchvision"].state_dict())
    images, targets = make_inputs(task, batch, size, variant, num_classes=NUM_CLASSES[task])
    train = step == "train step"
    ours = place(ours, variant, train=train)
    references = {name: place(ref, variant, train=train) for name, ref in references.items()}
    if not train:
        for model in (ours, *references.values()):
            calibrate_batchnorm(model, images)
    return task, batch, ours, references, images, targets


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("head, backbone", PAIRS)
def test_head_inference(benchmark, settings, peak_gflops, head, backbone, variant):
    task, batch, ours, references, images, _ = _setup(benchmark, settings, variant, head, backbone, "inference")
    gflop = count_flops(inference_step(ours, images, variant)) / 1e9 if settings.timed else None
    steps = {name: inference_step(maybe_compile(ref, variant), images, variant) for name, ref in references.items()}
    side_by_side(benchmark, inference_step(maybe_compile(ours, variant), images, variant), steps,
                 rounds=settings.head_rounds, warmup=settings.warmup, images=batch, gflop=gflop,
                 peak_gflops=peak_gflops.get(variant.peak_key), peak_key=variant.peak_key)


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("head, backbone", PAIRS)
def test_head_train_step(benchmark, settings, peak_gflops, head, backbone, variant):
    task, batch, ours, references, images, targets = _setup(benchmark, settings, variant, head, backbone,
                                                             "train step")
    steps = {name: train_step(maybe_compile(ref, variant), task, images, targets, variant)
             for name, ref in references.items()}
    side_by_side(benchmark, train_step(maybe_compile(ours, variant), task, images, targets, variant), steps,
                 rounds=settings.head_rounds, warmup=settings.warmup, images=batch)
