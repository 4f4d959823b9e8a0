"""Accuracy of short, deterministic training runs: a regression here means a model stopped learning as well.

* detection AP50 on the built-in shapes set: Faster R-CNN + FPN on MobileNetV3-Large (the quickstart's
  detector config, on half its training images), through ``vertebra.engine.train``;
* LR-ASPP mIoU on the shapes set (the quickstart's segmenter config, half its images), through the engine;
* classifier top-1 on scikit-learn's digits (1797 real 8x8 handwritten digits, upscaled to 32 px),
  MobileNetV3-Small from scratch.  This one is an in-memory loop rather than the engine: the engine's
  classification transforms are ImageNet's (random resized crops, flips), which destroy 8x8 digits;
  the point is to track the model, with vertebra's own top-k metric.

Metrics are gated (``tolerance`` below the baseline fails) only in full mode; quick and smoke runs
shrink the data to seconds and record their numbers ungated.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from vertebra import registry

DETECTION_TOLERANCE = 0.08   # AP50 points (0-1 scale) below the baseline that still pass
SEGMENTATION_TOLERANCE = 0.05
DIGITS_TOLERANCE = 0.03
INT8_DROP_TOLERANCE = 0.01   # top-1 (0-1 scale) the int8 drop may grow past its baseline
INT8_COSINE_TOLERANCE = 0.01


def _record(benchmark, settings, name: str, value: float, tolerance: float, **extra) -> None:
    benchmark.extra_info.setdefault("metrics", {})[name] = {
        "value": float(value), "higher_is_better": True, "tolerance": tolerance,
        "gated": settings.mode == "full", **extra}


def _engine_config(base: dict, out, settings, train_images: int) -> dict:
    from vertebra.engine._quickstart import QUICK_OVERRIDES
    from vertebra.engine.config import apply_overrides

    overrides = [f"data.root={out / 'data'}", "device=cpu", f"data.num_train={train_images}"]
    if settings.mode != "full":
        overrides = [f"data.root={out / 'data'}", "device=cpu", *QUICK_OVERRIDES]
        if base["task"] == "detection":
            overrides += ["model.min_size=64", "model.max_size=64"]
    return apply_overrides(copy.deepcopy(base), overrides)


def _train(config: dict, out) -> dict:
    from vertebra.engine import train

    return train(config, out_dir=out / "run", progress=False).metrics


def test_detection_ap50_shapes(benchmark, settings, tmp_path):
    from vertebra.engine._quickstart import DETECTION_FROM_SCRATCH

    config = _engine_config(DETECTION_FROM_SCRATCH, tmp_path, settings, train_images=256)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info["config"] = config
    metrics = benchmark.pedantic(_train, args=(config, tmp_path), rounds=1, iterations=1)
    _record(benchmark, settings, "detection_ap50_shapes_fasterrcnn_mobilenet_v3_large", metrics["AP50"],
            DETECTION_TOLERANCE)


def test_lraspp_miou_shapes(benchmark, settings, tmp_path):
    from vertebra.engine._quickstart import SEGMENTATION

    config = _engine_config(SEGMENTATION, tmp_path, settings, train_images=256)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info["config"] = config
    metrics = benchmark.pedantic(_train, args=(config, tmp_path), rounds=1, iterations=1)
    _record(benchmark, settings, "lraspp_miou_shapes_mobilenet_v3_large", metrics["mIoU"], SEGMENTATION_TOLERANCE)
    if importlib.util.find_spec("nncf") is not None:   # the trained model after PTQ, on the same val images
        int8 = _lraspp_int8_miou(config, tmp_path)
        benchmark.extra_info["int8"] = int8
        # issue 15's goal: PTQ loses <= 1 point mIoU
        _record(benchmark, settings, "lraspp_miou_shapes_int8_minus_float", int8["int8_mIoU"] - int8["float_mIoU"],
                INT8_DROP_TOLERANCE)


def _lraspp_int8_miou(config: dict, out) -> dict:
    """PTQ of the run's artifact calibrated on its training images; float and int8 mIoU on its val set."""
    import vertebra
    from vertebra import data as vdata
    from vertebra.metrics import SegmentationMetric

    root = out / "data"
    quantized = vertebra.quantize(out / "run" / "model.safetensors", root / "train", samples=300)
    model = vertebra.load_model(out / "run" / "model.safetensors")
    val = vdata.CocoSemantic(root / "val", root / "annotations" / "instances_val.json",
                             vdata.segmentation_transforms(False, config["data"].get("size")))
    metrics = {"float": SegmentationMetric(len(model.artifact.class_names)),
               "int8": SegmentationMetric(len(model.artifact.class_names))}
    for image, mask in (val[i] for i in range(len(val))):
        with torch.no_grad():
            metrics["float"].update(model(image[None])["out"].argmax(1), mask[None].long())
        metrics["int8"].update(quantized(image[None])["out"].argmax(1), mask[None].long())
    return {f"{name}_mIoU": float(metric.compute()["mIoU"]) for name, metric in metrics.items()}


def _digits(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # 0..16 grey levels
    images = F.interpolate(images, size=size, mode="nearest").expand(-1, 3, -1, -1)
    return ((images - 0.5) / 0.5).contiguous(), torch.tensor(digits.target)


def _digits_model(epochs: int, train_count: int, batch: int = 64, lr: float = 0.01):
    """MobileNetV3-Small trained on digits: ``(model, images, labels, train indices, val indices)``."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images, labels = _digits()
    order = torch.randperm(len(images), generator=generator)
    train, val = order[:train_count], order[1437:]        # the last 360 digits are always the val split
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1                          # short run from scratch: let statistics keep up
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        _digits_epoch(model, optimizer, images, labels, train, generator, batch, schedule)
    return model.eval(), images, labels, train, val


def _digits_epoch(model, optimizer, images, labels, train, generator, batch: int, schedule=None) -> None:
    """One pass over ``train`` (indices, reshuffled by ``generator``) in batches of ``batch``."""
    shuffled = train[torch.randperm(len(train), generator=generator)]
    for start in range(0, len(shuffled), batch):
        chosen = shuffled[start:start + batch]
        loss = F.cross_entropy(model(images[chosen]), labels[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    from vertebra.metrics.classification import TopKAccuracy

    metric = TopKAccuracy(ks=(1,))
    metric.update(logits, labels)
    return float(metric.compute()["top1"])


def _train_digits(epochs: int, train_count: int) -> float:
    model, images, labels, _, val = _digits_model(epochs, train_count)
    with torch.no_grad():
        return _top1(model(images[val]), labels[val])


def test_classifier_top1_digits(benchmark, settings):
    epochs, train_count = (8, 1437) if settings.mode == "full" else (1, 256)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info.update(epochs=epochs, train_images=train_count, val_images=360)
    top1 = benchmark.pedantic(_train_digits, args=(epochs, train_count), rounds=1, iterations=1)
    _record(benchmark, settings, "classifier_top1_digits_mobilenet_v3_small", top1, DIGITS_TOLERANCE)


def _digits_int8(epochs: int, train_count: int, folder) -> dict:
    """Train on digits, quantize (PTQ, calibrated on 300 training digits as PNGs), compare on the 360 val digits."""
    import numpy as np
    from PIL import Image

    import vertebra
    from vertebra.quantization.report import cosine_similarity
    from vertebra.weights.artifact import Preprocessing, save_artifact

    model, images, labels, train, val = _digits_model(epochs, train_count)
    calibration = folder / "calibration"
    calibration.mkdir()
    for index in train[:300].tolist():   # the PNGs hold the 32 px digits; the artifact normalises them
        pixels = ((images[index] * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(pixels)).save(calibration / f"{index:04d}.png")
    source = save_artifact(folder / "digits.safetensors", model, task="classification",
                           class_names=[str(d) for d in range(10)],
                           preprocessing=Preprocessing("none", mean=(0.5,) * 3, std=(0.5,) * 3))
    quantized = vertebra.quantize(source, calibration, samples=300)
    with torch.no_grad():
        float_logits = model(images[val])
    int8_logits = quantized(images[val])
    return {"float_top1": _top1(float_logits, labels[val]), "int8_top1": _top1(int8_logits, labels[val]),
            "cosine": cosine_similarity(int8_logits, float_logits), "int8_ops": quantized.report["ops"]["int8_total"]}


def test_classifier_top1_digits_int8(benchmark, settings, tmp_path):
    pytest.importorskip("nncf")
    epochs, train_count = (8, 1437) if settings.mode == "full" else (1, 320)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info.update(epochs=epochs, train_images=train_count, val_images=360, calibration_images=300)
    result = benchmark.pedantic(_digits_int8, args=(epochs, train_count, tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    # issue 15's goal: PTQ loses <= 0.5 points top-1; recorded as the int8 model's top-1 and its drop
    _record(benchmark, settings, "classifier_top1_digits_mobilenet_v3_small_int8", result["int8_top1"],
            DIGITS_TOLERANCE)
    _record(benchmark, settings, "classifier_top1_digits_int8_minus_float", result["int8_top1"] - result["float_top1"],
            INT8_DROP_TOLERANCE)
    _record(benchmark, settings, "classifier_logit_cosine_digits_int8", result["cosine"], INT8_COSINE_TOLERANCE)


def _digits_qat(epochs: int, train_count: int, qat_epochs: int, batch: int = 64, lr: float = 0.001) -> dict:
    """Train on digits, then fine-tune with NNCF fake quantizers (vertebra's QAT steps: BatchNorm
    frozen for the last epoch) and run the int8 OpenVINO graph on the 360 val digits."""
    from vertebra.deploy.embedded import compile_embedded
    from vertebra.engine.config import QuantizationConfig
    from vertebra.engine.qat import apply_freezes, int8_graph, prepare_qat

    model, images, labels, train, val = _digits_model(epochs, train_count)
    with torch.no_grad():
        float_logits = model(images[val])
    model, float_keys = prepare_qat(model, [images[i:i + 1] for i in train[:256].tolist()])
    settings = QuantizationConfig(mode="qat", freeze_bn_epoch=max(qat_epochs - 1, 0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)
    for epoch in range(qat_epochs):
        model.train()
        apply_freezes(model, settings, epoch, float_keys)
        _digits_epoch(model, optimizer, images, labels, train, generator, batch)
    compiled = compile_embedded(int8_graph(model, images[:1], epoch=qat_epochs))
    int8_logits = torch.from_numpy(compiled(images[val].numpy())[0])
    from vertebra.quantization.report import cosine_similarity

    return {"float_top1": _top1(float_logits, labels[val]), "int8_top1": _top1(int8_logits, labels[val]),
            "cosine": cosine_similarity(int8_logits, float_logits)}


def test_classifier_top1_digits_qat(benchmark, settings):
    pytest.importorskip("nncf")
    epochs, train_count, qat_epochs = (8, 1437, 2) if settings.mode == "full" else (1, 320, 1)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info.update(epochs=epochs, qat_epochs=qat_epochs, train_images=train_count, val_images=360)
    result = benchmark.pedantic(_digits_qat, args=(epochs, train_count, qat_epochs), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    # issue 15's goal: QAT loses <= 0.2 points top-1 against the float model it started from
    _record(benchmark, settings, "classifier_top1_digits_qat_minus_float", result["int8_top1"] - result["float_top1"],
            INT8_DROP_TOLERANCE)
