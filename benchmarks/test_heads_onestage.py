"""Accuracy of the one-stage detectors (RetinaNet, FCOS, SSDlite) after a short run on the shapes set.

Each case trains through ``vertebra.engine.train`` (the ``detection`` task, COCOeval) from scratch on
MobileNetV3-Large, the quickstart detector's recipe with the head swapped, and records AP50 *and*
the gain over the same model untrained (the weights it starts from, evaluated on the same val
images): the figure issue 18 asks for ("short training improves each new detector's AP50").
Gated in full mode only, like ``test_accuracy.py``; quick and smoke runs shrink the data to seconds.

Throughput of these heads, side by side with torchvision's ``ssdlite320_mobilenet_v3_large`` and
smp's decoders, runs in ``test_heads.py`` (every registered head is a case there).
"""

from __future__ import annotations

import copy

import pytest
import torch

from vertebra import registry

AP50_TOLERANCE = 0.08  # AP50 points (0-1 scale) below the baseline that still pass

# The quickstart detector's model section with the head swapped; sizes as the quickstart (128 px).
ONE_STAGE = {
    "retinanet_fpn": {"min_size": 128, "max_size": 128, "fpn_channels": 64, "detections_per_img": 100},
    "fcos_fpn": {"min_size": 128, "max_size": 128, "fpn_channels": 64, "detections_per_img": 100},
    "ssdlite": {"size": 128, "detections_per_img": 100},
}


def _config(head: str, out, settings) -> dict:
    from vertebra.engine._quickstart import DETECTION_FROM_SCRATCH, QUICK_OVERRIDES
    from vertebra.engine.config import apply_overrides

    base = copy.deepcopy(DETECTION_FROM_SCRATCH)
    base["model"] = {"head": head, "backbone": {"name": "mobilenet_v3_large"}, **ONE_STAGE[head]}
    overrides = [f"data.root={out / 'data'}", "device=cpu", "data.num_train=256"]
    if settings.mode != "full":
        overrides = [f"data.root={out / 'data'}", "device=cpu", *QUICK_OVERRIDES]
        if head == "ssdlite":
            overrides.append("model.size=64")
        else:
            overrides += ["model.min_size=64", "model.max_size=64"]
    return apply_overrides(base, overrides)


def _untrained_ap50(config: dict, out) -> float:
    """AP50 of the weights training starts from (same seed, same classes), on the same val images."""
    from safetensors.torch import save_file

    from vertebra.engine import evaluate

    torch.manual_seed(config["seed"])
    model = registry.build_from_config({**config["model"], "num_classes": 4})  # background + 3 shapes
    path = out / "untrained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return evaluate(config, path, out_dir=out / "untrained")["AP50"]


def _train_and_compare(config: dict, out) -> dict:
    from vertebra.engine import train

    trained = train(config, out_dir=out / "run", progress=False).metrics
    return {"trained": trained["AP50"], "untrained": _untrained_ap50(config, out)}


@pytest.mark.parametrize("head", sorted(ONE_STAGE))
def test_one_stage_detector_ap50_shapes(benchmark, settings, tmp_path, head):
    config = _config(head, tmp_path, settings)
    benchmark.group = "accuracy (short training runs)"
    benchmark.extra_info["config"] = config
    ap50 = benchmark.pedantic(_train_and_compare, args=(config, tmp_path), rounds=1, iterations=1)
    benchmark.extra_info["ap50"] = ap50
    metrics = benchmark.extra_info.setdefault("metrics", {})
    for name, value in ((f"detection_ap50_shapes_{head}_mobilenet_v3_large", ap50["trained"]),
                        (f"detection_ap50_gain_shapes_{head}_mobilenet_v3_large", ap50["trained"] - ap50["untrained"])):
        metrics[name] = {"value": float(value), "higher_is_better": True, "tolerance": AP50_TOLERANCE,
                         "gated": settings.mode == "full"}
