"""``vertebra data ...``: write the built-in shapes data set, or check a COCO data set before training.

::

    vertebra data shapes --out DIR [--seed 0] [--num-train 64] [--num-val 16] [--size 128]
    vertebra data check ANN_FILE --images DIR [--task detection|instance] [--strict]

``check`` reads the file as the task that will train on it: ``instance`` needs a usable mask per
object, ``detection`` only a box.  Without ``--task`` a file whose annotations carry segmentations
is checked for instance segmentation (boxes and masks), one without any for detection (boxes only),
so valid box-only data is not reported as "0 objects".
"""

from __future__ import annotations

import argparse
import json
import time


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    shapes = sub.add_parser("shapes", help="write the built-in COCO-format shapes data set",
                            description="Write a deterministic COCO-format data set of coloured shapes "
                                        "(train and val splits, instances JSON with boxes and polygons).")
    shapes.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    shapes.add_argument("--num-train", type=int, default=64, metavar="N", help="training images (default 64)")
    shapes.add_argument("--num-val", type=int, default=16, metavar="N", help="validation images (default 16)")
    shapes.add_argument("--size", type=int, default=128, metavar="PX", help="image side in pixels (default 128)")

    check = sub.add_parser("check", help="validate a COCO instances file and its images",
                           description="Read every record and decode every image of a COCO data set; "
                                       "report the first problem with its file and record.")
    check.add_argument("ann_file", help="instances_*.json")
    check.add_argument("--images", required=True, metavar="DIR", help="folder of the images")
    check.add_argument("--task", choices=("detection", "instance"), default=None,
                       help="what the data will train: detection needs boxes, instance also masks "
                            "(default: instance when any annotation has a segmentation, else detection)")
    check.add_argument("--strict", action="store_true",
                       help="refuse unusable annotations (degenerate boxes; with instance, unusable masks) "
                            "instead of skipping them")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "shapes":
        return _shapes(args)
    return _check(args)


def _shapes(args: argparse.Namespace) -> int:
    from .shapes import generate_shapes

    start = time.perf_counter()
    paths = generate_shapes(args.out, num_train=args.num_train, num_val=args.num_val,
                            image_size=args.size, seed=args.seed)
    elapsed = time.perf_counter() - start
    for split, ann_file in (("train", paths.train_annotations), ("val", paths.val_annotations)):
        data = json.loads(ann_file.read_text(encoding="utf-8"))
        print(f"{split:5s}  {len(data['images']):4d} images  {len(data['annotations']):4d} objects  "
              f"{ann_file}")
    print(f"categories: {', '.join(paths.categories)}  ({elapsed:.2f} s)")
    return 0


def _check(args: argparse.Namespace) -> int:
    import warnings

    from ._cocofile import load_coco
    from .coco import CocoDetection

    task = args.task
    if task is None:
        has_masks = any(ann.get("segmentation") for ann in load_coco(args.ann_file).anns.values())
        task = "instance" if has_masks else "detection"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(args.images, args.ann_file, with_masks=task == "instance", strict=args.strict)
    for warning in caught:
        print(f"warning: {warning.message}")
    objects = 0
    for index in range(len(dataset)):  # decodes every image: DataError on the first bad one
        objects += len(dataset[index][1]["labels"])
    what = "boxes and masks" if task == "instance" else "boxes"
    print(f"ok: {len(dataset)} images, {objects} objects ({what}: {task}), {dataset.num_classes - 1} categories "
          f"({', '.join(dataset.classes[1:])})")
    return 0
