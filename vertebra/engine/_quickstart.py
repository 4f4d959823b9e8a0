"""``vertebra quickstart``: the whole loop on a fresh machine, no downloads, a few minutes on a CPU.

1. generates the built-in shapes data set (COCO format) into ``OUT/data``;
2. trains a small segmenter (LR-ASPP on MobileNetV3-Large, from scratch) into ``OUT/segmenter``;
3. fine-tunes a detector (Faster R-CNN + FPN on MobileNetV3-Large) from the segmenter's backbone
   into ``OUT/detector``: the ``finetune:`` route a user takes from any pretrained model.  The
   segmenter has already learned what a circle, a square and a triangle look like, pixel by
   pixel; from scratch, the same detector schedule mixes up the classes;
4. evaluates both and prints a results table (AP, AP50, mIoU, images/s) next to what a model that
   learned nothing scores, and writes it to ``OUT/results.json`` / ``OUT/results.txt``.

Threads are pinned (:data:`THREADS`, not the machine's idle cores): a CPU's float reductions
depend on how many threads share them, so a load-dependent count gave a user's first run other
numbers than the README's.  ``--threads`` changes it (the numbers move slightly).

Each run folder holds ``last.pth`` (resumable checkpoint), ``model.safetensors`` (the model artifact
``vertebra predict`` reads), ``metrics.jsonl``, ``curves.png`` and
``predictions.png``.  The two configs below are also shipped as ``configs/train/quickstart_*.yaml``
(a test keeps them identical) so ``vertebra train`` reproduces either run.  A CUDA device is used
automatically when present (``--device``).  ``--quick`` shrinks everything (8 images, 1 epoch) to
prove the loop end to end in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = "vertebra-quickstart"
THREADS = 2  # (fewer on a one-core machine) see the module docstring

#: The segmenter run (see configs/train/quickstart_segmentation.yaml).
SEGMENTATION: dict[str, Any] = {
    "task": "semantic",
    "model": {"head": "lraspp", "backbone": {"name": "mobilenet_v3_large"}},
    "data": {"format": "shapes", "num_train": 384, "num_val": 64, "image_size": 128, "size": None,
             "shapes_seed": 0},
    "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0001},
    "schedule": {"name": "cosine", "warmup_epochs": 0.2},
    "epochs": 8, "batch_size": 8, "seed": 0,
    "bn_momentum": 0.1, "log_every": 8,
}

#: The detector run (see configs/train/quickstart_detection.yaml), started from the segmenter's backbone.
DETECTION: dict[str, Any] = {
    "task": "detection",
    "model": {
        "head": "fasterrcnn_fpn",
        "backbone": {"name": "mobilenet_v3_large"},
        "min_size": 128, "max_size": 128,          # the images are 128 px: no resize inside the model
        "fpn_channels": 64,                         # small pyramid, cheap RoI head
        "box_batch_size_per_image": 32,             # the RoI head dominates the step time on a CPU
        "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 64,
        "rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 100,
    },
    "data": {"format": "shapes", "num_train": 384, "num_val": 64, "image_size": 128, "size": None,
             "shapes_seed": 0},
    "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001},
    "schedule": {"name": "cosine", "warmup_epochs": 0.2},
    "finetune": {"weights": "runs/segmenter/model.safetensors"},  # the quickstart points it at OUT/segmenter
    "epochs": 2, "batch_size": 4, "seed": 0,
    "bn_momentum": 0.1, "clip_grad_norm": 10.0, "log_every": 8,
}

#: The detector's schedule from scratch (no ``finetune``): what the accuracy benchmarks track, since a
#: fine-tuned figure would also move with every change to the segmenter.
DETECTION_FROM_SCRATCH: dict[str, Any] = {key: value for key, value in DETECTION.items() if key != "finetune"}

#: ``--quick``: the same loop, tiny (for tests and CI).
QUICK_OVERRIDES = ["data.num_train=8", "data.num_val=4", "data.image_size=64", "epochs=1", "batch_size=4",
                   "log_every=1"]

RUNS = (("segmenter", SEGMENTATION), ("detector", DETECTION))   # the detector starts from the segmenter
COLUMNS = ["model", "task", "AP", "AP50", "mIoU", "pixel_acc", "images/s", "minutes"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto uses CUDA when available")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"CPU threads (default {THREADS}, pinned so the numbers match the README's on any machine)")
    parser.add_argument("--quick", action="store_true", help="tiny data and one epoch: proves the loop, not the numbers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_config(base: dict[str, Any], out: Path, device: str, quick: bool, threads: int | None = None) -> dict[str, Any]:
    """The config of one quickstart run, as plain data."""
    from .config import apply_overrides

    data_root = out / ("data-quick" if quick else "data")
    overrides = [f"device={device}", f"data.root={data_root}"] + (QUICK_OVERRIDES if quick else [])
    if threads is not None:
        overrides.append(f"threads={threads}")
    if base["task"] == "detection":
        overrides.append(f"finetune.weights={out / 'segmenter' / 'model.safetensors'}")
        if quick:
            overrides += ["model.min_size=64", "model.max_size=64"]
    return apply_overrides(copy.deepcopy(base), overrides)


def background_only(config: dict[str, Any], out: Path) -> dict[str, float]:
    """mIoU / pixel accuracy of predicting background everywhere on the val split (the floor to beat)."""
    import torch

    from ..metrics import SegmentationMetric
    from .config import parse_config
    from .tasks import task_spec

    parsed = parse_config(config)
    bundle = task_spec(parsed.task).build_data(parsed.data, out)
    metric = SegmentationMetric(bundle.num_classes, ignore_index=255)
    for index in range(len(bundle.val)):
        _, mask = bundle.val[index]
        mask = mask.as_subclass(torch.Tensor).long()
        metric.update(torch.zeros_like(mask), mask)
    result = metric.compute()
    return {"mIoU": float(result["mIoU"]), "pixel_acc": float(result["pixel_acc"])}


def run(args: argparse.Namespace) -> int:
    from .loop import train
    from .report import metrics_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or min(THREADS, os.cpu_count() or 1)
    print(f"vertebra quickstart -> {out.resolve()}  (CPU threads: {threads})"
          f"{'  (--quick: tiny run, numbers are not meaningful)' if args.quick else ''}")
    rows, results = [], {}
    for name, base in RUNS:
        config = run_config(base, out, args.device, args.quick, threads)
        model = config["model"]
        print(f"\n[{name}] {model['head']} on {model['backbone']['name']}: {config['epochs']} epochs, "
              f"{config['data']['num_train']} training images", flush=True)
        start = time.perf_counter()
        result = train(config, out_dir=out / name, progress=not args.no_progress, overwrite=True)  # a demo: rerun redoes it
        minutes = (time.perf_counter() - start) / 60
        metrics = result.metrics
        rows.append({"model": f"{model['head']} / {model['backbone']['name']}", "task": config["task"],
                     "AP": metrics.get("AP"), "AP50": metrics.get("AP50"), "mIoU": metrics.get("mIoU"),
                     "pixel_acc": metrics.get("pixel_acc"), "images/s": round(result.images_per_s, 1),
                     "minutes": round(minutes, 2)})
        results[name] = {"config": config, "metrics": metrics, "images_per_s": result.images_per_s,
                         "minutes": minutes, "files": {k: str(v) for k, v in result.files.items()},
                         "checkpoint": str(result.checkpoint)}
    floor = background_only(run_config(SEGMENTATION, out, args.device, args.quick), out)
    rows.append({"model": "baseline: predicts nothing", "task": "detection", "AP": 0.0, "AP50": 0.0})
    rows.append({"model": "baseline: all background", "task": "semantic", **floor})
    results["baselines"] = {"detection_predicts_nothing": {"AP": 0.0, "AP50": 0.0},
                            "semantic_all_background": floor}
    table = metrics_table(rows, COLUMNS)
    (out / "results.txt").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n" + table)
    print(f"\nwritten to {out}/: results.txt, results.json, data/, "
          + ", ".join(f"{name}/{{last.pth, model.safetensors, metrics.jsonl, curves.png, predictions.png}}" for name, _ in RUNS))
    return 0
