"""A one-stage detector trains and evaluates through the engine's ``detection`` task, unchanged.

One tiny epoch on the shapes set (4 images of 64 px) with COCOeval: the point is that the loss dict,
the detections and the metrics flow, not accuracy (``benchmarks/test_heads_onestage.py`` records
the AP50 gain of a real short run).
"""

from __future__ import annotations

import math

from vertebra.engine import train


def test_retinanet_trains_and_reports_coco_metrics(tmp_path):
    config = {"task": "detection",
              "model": {"head": "retinanet_fpn", "backbone": {"name": "mobilenet_v3_small"}, "min_size": 64,
                        "max_size": 64, "fpn_channels": 32, "detections_per_img": 20, "topk_candidates": 50},
              "data": {"num_train": 4, "num_val": 2, "image_size": 64, "size": None},
              "epochs": 1, "batch_size": 2, "seed": 0, "optimizer": {"name": "sgd", "lr": 0.01},
              "schedule": {"warmup_epochs": 0}, "log_every": 1}
    result = train(config, out_dir=tmp_path / "run", progress=False)
    assert {"AP", "AP50", "AP75"} <= set(result.metrics)
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.epochs_done == 1 and result.model.config["num_classes"] == 4  # background + 3 shapes
    assert (tmp_path / "run" / "model.safetensors").stat().st_size > 0
