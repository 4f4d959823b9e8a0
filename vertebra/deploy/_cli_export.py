"""``vertebra export MODEL --format onnx|openvino|pt2``: a model artifact to a deployable file + JSON sidecar.

The sidecar (``<path>.json``) carries what a runtime consumer needs besides the graph: the task, the
class names and their COCO ``category_ids`` (``null`` when the model has none), the preprocessing
the model was trained with, the input and output names and whether height/width are dynamic.  It is written after the model file, atomically, so a sidecar never
describes a file that is not there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import ExportError

FORMATS = ("onnx", "openvino", "pt2")
SIDECAR_VERSION = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model artifact (OUT/model.safetensors written by 'vertebra train')")
    parser.add_argument("--format", required=True, help="onnx, openvino (.xml + .bin) or pt2 (torch.export)")
    parser.add_argument("--out", default=None, help="the file to write (default: MODEL with the format's suffix)")
    parser.add_argument("--dynamic", dest="dynamic", action="store_true", default=True,
                        help="any input height and width (the default)")
    parser.add_argument("--static", dest="dynamic", action="store_false", help="fix the input size to --size")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="the input size traced at (default: the artifact's preprocessing size, else 224x224)")


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:  # before reading anything: the cheapest mistake to report
        raise ExportError(f"unknown export format {args.format!r}; choose one of {', '.join(FORMATS)}")
    from ..atomic import atomic_open
    from ..registry import build_from_config
    from ..weights.artifact import read_artifact
    from .export import SUFFIXES, export_model, head_name, output_names, require
    from .detection import is_detector

    if args.format != "pt2":  # a missing extra fails before the artifact is read or the model traced
        require("onnxscript", f"export to {args.format}")
        require("onnx", f"export to {args.format}")
        if args.format == "openvino":
            require("openvino", "export to OpenVINO")
    artifact = read_artifact(args.model)
    model = build_from_config(artifact.config)
    model.load_state_dict(artifact.state_dict, strict=True)
    model.eval()
    size = tuple(args.size) if args.size else _default_size(artifact.preprocessing)
    out = Path(args.out) if args.out else Path(args.model).with_suffix(SUFFIXES[args.format])
    if artifact.graph is not None:   # int8: the graph quantize made, as it is (dynamic height and width)
        from .embedded import export_embedded

        if not args.dynamic:
            raise ExportError("the graph of an int8 artifact is already made, dynamic in height and width; "
                              "leave out --static")
        path = export_embedded(artifact.graph, args.format, out)
    else:
        path = export_model(model, args.format, out, example_size=size, dynamic=args.dynamic, opset=args.opset)
    sidecar = {
        "format": args.format, "sidecar_version": SIDECAR_VERSION, "file": path.name,
        "head": head_name(model), "task": artifact.task, "class_names": list(artifact.class_names),
        "category_ids": list(artifact.category_ids) if artifact.category_ids is not None else None,
        "preprocessing": dataclasses.asdict(artifact.preprocessing),
        "input": {"name": "image" if is_detector(model) else "input",
                  "shape": [1 if is_detector(model) else "N", 3, "H" if args.dynamic else size[0],
                            "W" if args.dynamic else size[1]],
                  "range": "[0, 1] float32, RGB" + ("; normalised inside the graph" if is_detector(model) else
                                                    "; apply preprocessing.mean/std first")},
        "outputs": output_names(model), "config": artifact.config,
        "precision": artifact.graph.precision if artifact.graph is not None else "float32",
    }
    with atomic_open(f"{path}.json", "w", encoding="utf-8") as handle:
        json.dump(sidecar, handle, indent=2, default=_plain)
        handle.write("\n")
    print(f"wrote {path} and {path}.json")
    return 0


def _default_size(preprocessing: Any) -> tuple[int, int]:
    side = getattr(preprocessing, "crop", None) or getattr(preprocessing, "size", None) or 224
    return int(side), int(side)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else str(value)
