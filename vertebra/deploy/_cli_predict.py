"""``vertebra predict MODEL --images DIR|FILE... --out DIR [options]``: a model artifact on image files.

Writes the task's result files, overlays and ``summary.json`` into ``--out`` (see
:mod:`vertebra.deploy.writers`), prints one line per unreadable image and a summary.  Exit status:
0 when every image was predicted, 1 when some could not be read (the rest were predicted), 2 for a
vertebra error (a missing model or image path, a bad option, a missing or invalid
``--ground-truth`` file: all found before anything is written).
"""

from __future__ import annotations

import argparse
import sys

EXIT_SOME_FAILED = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model artifact (OUT/model.safetensors of a training run, or its OUT folder)")
    parser.add_argument("--images", nargs="+", required=True, metavar="DIR|FILE",
                        help="image files and folders (folders: every image file below them)")
    parser.add_argument("--out", required=True, help="folder for the results, overlays and summary.json")
    parser.add_argument("--threshold", type=float, default=None,
                        help="minimum score kept: detections (default 0.5) or top-k classes (default 0); "
                             "semantic models take none")
    parser.add_argument("--runtime", default=None, help="torch (the default for a float artifact), onnxruntime or "
                        'openvino (the last two: pip install "vertebra[deploy]"; openvino is the default for an '
                        "int8 artifact from 'vertebra quantize')")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call, at most (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (torch runtime)")
    parser.add_argument("--top-k", type=int, default=5, help="classes reported per image (classification; default 5)")
    parser.add_argument("--no-overlays", action="store_true", help="write the result files only")
    parser.add_argument("--ground-truth", metavar="ANNOTATIONS.json", default=None,
                        help="a COCO-format annotation file (as training reads): its annotations are drawn on "
                             "the overlays of the images it has a record for, matched by file name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .predict import Predictor

    predictor = Predictor(args.model, runtime=args.runtime, device=args.device, batch_size=args.batch_size,
                          threshold=args.threshold, top_k=args.top_k, progress=False if args.no_progress else None,
                          workdir=None)
    summary = predictor.predict_to(args.out, args.images, overlays=not args.no_overlays,
                                   ground_truth=args.ground_truth)
    for failure in summary["failures"]:
        print(f"could not read {failure['file_name']}: {failure['reason']}", file=sys.stderr)
    truth = summary["ground_truth"]
    if truth is not None:
        for name, reason in truth["not_drawn"].items():
            print(f"ground truth not drawn on {name}: {reason}", file=sys.stderr)
        print(f"ground truth from {truth['file']} drawn on {truth['drawn']} of {summary['predicted']} overlay(s)")
    files = ", ".join(summary["files"] + ["summary.json"] + (["overlays/"] if summary["overlays"] else []))
    print(f"{predictor.task}: predicted {summary['predicted']} of {summary['images']} image(s)"
          + (f", {summary['failed']} unreadable (listed in summary.json)" if summary["failed"] else "")
          + f"; wrote {files} to {args.out}")
    return EXIT_SOME_FAILED if summary["failed"] else 0
