"""``vertebra quantize MODEL --calibration DIR|FILE|CONFIG... --out DIR``: an int8 artifact of a model.

Writes ``OUT/model.safetensors`` (the int8 artifact: ``vertebra predict OUT`` runs it on OpenVINO,
``vertebra export OUT/model.safetensors --format openvino`` writes its IR) and
``OUT/quantization.json`` (what runs in int8, the calibration used, the self-check).  Both are
written only after quantization succeeded, each atomically, and an existing artifact in ``OUT`` is
never replaced: ``--out`` must not hold one already.
"""

from __future__ import annotations

import argparse
import json

from ..deploy.model import ARTIFACT_NAME

REPORT_NAME = "quantization.json"


def configure(parser: argparse.ArgumentParser) -> None:
    from .api import BACKENDS, DEFAULT_SAMPLES

    parser.add_argument("model", help="a float model artifact (OUT/model.safetensors of a training run, or OUT)")
    parser.add_argument("--calibration", nargs="+", required=True, metavar="DIR|FILE|CONFIG",
                        help="calibration images (folders, files) or a training config (its training images)")
    parser.add_argument("--out", required=True, help=f"folder for {ARTIFACT_NAME} (int8) and {REPORT_NAME}")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"calibration images used, at most (default {DEFAULT_SAMPLES}; at least 8)")
    parser.add_argument("--backend", default="openvino", help=f"{', '.join(BACKENDS)} (default openvino)")


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_open, check_output_folder
    from ..errors import OutputError
    from .api import quantize

    out = check_output_folder(args.out, probe=True)
    target = out / ARTIFACT_NAME
    if target.exists():
        raise OutputError(f"{str(target)!r} already exists; choose another --out (an artifact is never replaced)")
    calibration = args.calibration[0] if len(args.calibration) == 1 else args.calibration
    result = quantize(args.model, calibration, samples=args.samples, backend=args.backend)
    result.save(target)
    with atomic_open(out / REPORT_NAME, "w", encoding="utf-8") as handle:
        json.dump(result.report, handle, indent=2)
        handle.write("\n")
    ops = result.report["ops"]
    cosine = result.report.get("cosine_on_calibration")
    print(f"wrote {target} ({ops['int8_total']} of {ops['int8_total'] + ops['float_total']} weighted layers in "
          f"int8, {result.report['calibration']['samples']} calibration images"
          + (f", cosine to float {cosine:.4f}" if cosine is not None else "") + f") and {out / REPORT_NAME}")
    return 0

