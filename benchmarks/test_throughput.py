"""Throughput of the backbone families, side by side with torchvision's and timm's same architectures.

Cases (each a pytest-benchmark entry; ``extra_info`` has images/s, per-reference ratios, GFLOP/s and
the fraction of the measured matmul peak):

* ``backbone inference``: ``registry.build_backbone(name)`` vs torchvision ``model.features`` vs
  timm ``forward_features``;
* ``classifier inference`` / ``classifier train step``: the classifier model vs torchvision's and
  timm's classification models (forward; forward + backward + SGD step);
* ``optimized inference``: ``vertebra.optimize(classifier)`` vs torchvision eager, timm eager and,
  for EfficientNet-B0 and MobileNetV3-Large in full mode, ``torch.compile(torchvision model)``.

Every variant runs ours and the references identically (device, channels_last, autocast, compile).
"""

from __future__ import annotations

import pytest
import torch

from _cases import BACKBONES, COMPILED_REFERENCE, FeaturesOnly, timm_model, torchvision_classifier
from _harness import count_flops, side_by_side, used_parameter_count
from _steps import calibrate_batchnorm, inference_step, make_inputs, maybe_compile, place, train_step
from conftest import CPU, VARIANTS, variant_params

import vertebra
from vertebra import registry

CASES = [pytest.param(case, id=case.name) for case in BACKBONES]
NUM_CLASSES = 1000
# CI's smoke run (benchmarks disabled) builds one backbone per family kind; the code path is the same
# for every row, and building the big ones three times over (ours, torchvision, timm) costs minutes.
SMOKE_CASES = ("efficientnet_b0", "mobilenet_v3_small")


@pytest.fixture
def case(request, settings):
    case = request.param
    if settings.mode == "smoke" and case.name not in SMOKE_CASES:
        pytest.skip(f"the smoke run covers {', '.join(SMOKE_CASES)}; quick and full modes run every backbone")
    return case


def _same(ours, reference, images) -> bool:
    return used_parameter_count(ours, images) == used_parameter_count(reference, images)


def _run(benchmark, settings, peak_gflops, variant, ours, references, *, images, step, task, targets=None,
         unoptimized=None, compiled=()):
    """Place, (compile), build steps, count FLOPs on the eager model, then time side by side.

    ``unoptimized``: for an already optimized (and placed) ``ours``, the model it came from (FLOPs are
    counted on it: torch's counter does not know oneDNN's fused kernels).  ``compiled``: names of
    references to ``torch.compile`` whatever the variant.
    """
    benchmark.extra_info["variant"] = variant.name
    train = step == "train"
    eager = ours if unoptimized is not None else place(ours, variant, train=train)
    placed = {name: place(ref, variant, train=train) for name, ref in references.items()}
    if not train:  # (an optimized ``ours`` was calibrated before optimizing: see _calibrated)
        for model in ([eager] if unoptimized is None else []) + list(placed.values()):
            calibrate_batchnorm(model, images)
    source = unoptimized if unoptimized is not None else eager
    benchmark.extra_info["same_architecture"] = {name: _same(source, ref, images) for name, ref in placed.items()}

    def make(model):
        if train:
            return train_step(model, task, images, targets, variant)
        return inference_step(model, images, variant)

    flop_model = unoptimized if unoptimized is not None else eager
    gflop = count_flops(make(flop_model)) / 1e9 if settings.timed and not train else None
    ours_step = make(maybe_compile(eager, variant))
    reference_steps = {name: make(torch.compile(model) if name in compiled else maybe_compile(model, variant))
                       for name, model in placed.items()}
    # An optimized model's fused graphs are traced on the first call and fused after two profiling calls.
    warmup = settings.warmup + (2 if unoptimized is not None else 0)
    return side_by_side(benchmark, ours_step, reference_steps, rounds=settings.rounds,
                        warmup=warmup, images=settings.batch, gflop=gflop,
                        peak_gflops=peak_gflops.get(variant.peak_key), peak_key=variant.peak_key)


def _calibrated(model, variant, images):
    """Placed, BatchNorm-calibrated (see calibrate_batchnorm) and in eval mode: what optimize() should fold."""
    return calibrate_batchnorm(place(model, variant, train=False), images)


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_backbone_inference(benchmark, settings, peak_gflops, case, variant):
    benchmark.group = f"backbone inference [{variant.name}]"
    ours = registry.build_backbone(case.name)
    references = {"torchvision": torchvision_classifier(case.torchvision).features}
    if case.timm:
        references["timm"] = FeaturesOnly(timm_model(case.timm))
    images, _ = make_inputs("classification", settings.batch, settings.size, variant, num_classes=NUM_CLASSES)
    _run(benchmark, settings, peak_gflops, variant, ours, references, images=images, step="inference",
         task="classification")


def _classifier_references(case) -> dict:
    references = {"torchvision": torchvision_classifier(case.torchvision)}
    if case.timm:
        references["timm"] = timm_model(case.timm, num_classes=NUM_CLASSES)
    return references


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_classifier_inference(benchmark, settings, peak_gflops, case, variant):
    benchmark.group = f"classifier inference [{variant.name}]"
    ours = registry.build("classifier", backbone=case.name, num_classes=NUM_CLASSES)
    images, _ = make_inputs("classification", settings.batch, settings.size, variant, num_classes=NUM_CLASSES)
    _run(benchmark, settings, peak_gflops, variant, ours, _classifier_references(case), images=images,
         step="inference", task="classification")


@pytest.mark.parametrize("variant", variant_params((CPU, VARIANTS[2])))
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_optimized_inference(benchmark, settings, peak_gflops, case, variant):
    """vertebra.optimize(classifier) against the references' eager (and compiled) forward."""
    benchmark.group = f"optimized inference [{variant.name}]"
    images, _ = make_inputs("classification", settings.batch, settings.size, variant, num_classes=NUM_CLASSES)
    eager = _calibrated(registry.build("classifier", backbone=case.name, num_classes=NUM_CLASSES), variant, images)
    fast = vertebra.optimize(eager)
    benchmark.extra_info["optimization_report"] = dict(fast.optimization_report)
    references = _classifier_references(case)
    compiled = ()
    if settings.compile_references and case.name in COMPILED_REFERENCE:
        references["torchvision_compiled"] = torchvision_classifier(case.torchvision)
        compiled = ("torchvision_compiled",)
    _run(benchmark, settings, peak_gflops, variant, fast, references, images=images, step="inference",
         task="classification", unoptimized=eager, compiled=compiled)


@pytest.mark.parametrize("variant", variant_params())
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_classifier_train_step(benchmark, settings, peak_gflops, case, variant):
    benchmark.group = f"classifier train step [{variant.name}]"
    ours = registry.build("classifier", backbone=case.name, num_classes=NUM_CLASSES)
    images, labels = make_inputs("classification", settings.batch, settings.size, variant, num_classes=NUM_CLASSES)
    _run(benchmark, settings, peak_gflops, variant, ours, _classifier_references(case), images=images,
         step="train", task="classification", targets=labels)


@pytest.mark.parametrize("variant", variant_params((CPU, VARIANTS[2])))
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in BACKBONES if c.name in COMPILED_REFERENCE],
                         indirect=True)
def test_optimized_compiled_inference(benchmark, settings, peak_gflops, case, variant):
    """``vertebra.optimize(classifier, compile=True)`` vs ``torch.compile(torchvision model)``: compiled vs compiled."""
    if not settings.compile_references:
        pytest.skip("compiling takes minutes on a small CPU: full mode only (and not with --no-compile)")
    benchmark.group = f"optimized+compiled inference [{variant.name}]"
    images, _ = make_inputs("classification", settings.batch, settings.size, variant, num_classes=NUM_CLASSES)
    eager = _calibrated(registry.build("classifier", backbone=case.name, num_classes=NUM_CLASSES), variant, images)
    fast = vertebra.optimize(eager, compile=True)
    references = {"torchvision_compiled": torchvision_classifier(case.torchvision)}
    _run(benchmark, settings, peak_gflops, variant, fast, references, images=images, step="inference",
         task="classification", unoptimized=eager, compiled=("torchvision_compiled",))
