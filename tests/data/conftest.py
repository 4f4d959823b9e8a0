"""Shared fixtures for the data tests: one small shapes data set per session, and a writer for
hand-made COCO files (to break them on purpose)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vertebra.data import generate_shapes

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, image_size=64, seed=3)


@pytest.fixture
def make_coco(tmp_path):
    """``make_coco(images, annotations, categories, sizes)`` writes a COCO file and real images.

    ``images``: list of (id, file_name, width, height); files are written as solid-colour JPEGs
    unless ``write_images=False``.  Returns ``(image_dir, ann_file)``.
    """

    def _make(images, annotations, categories=((1, "thing"),), *, write_images=True, raw=None):
        image_dir = tmp_path / "images"
        image_dir.mkdir(exist_ok=True)
        if write_images:
            for _, file_name, width, height in images:
                Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(image_dir / file_name)
        ann_file = tmp_path / "instances.json"
        if raw is not None:
            ann_file.write_text(raw)
        else:
            ann_file.write_text(json.dumps({
                "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
                "annotations": annotations,
                "categories": [{"id": c, "name": n} for c, n in categories],
            }))
        return image_dir, ann_file

    return _make


@pytest.fixture
def box_ann():
    """``box_ann(ann_id, image_id, [x, y, w, h], category_id=1)``: an annotation whose polygon is its box."""
    return _box_annotation


def _box_annotation(ann_id: int, image_id: int, bbox, category_id: int = 1, **extra) -> dict:
    x, y, w, h = bbox
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "segmentation": [polygon], "area": float(max(w, 0) * max(h, 0)), "iscrowd": 0, **extra}



@pytest.fixture
def run_limited():
    """``run_limited(image_dir, ann_files)`` -> one result line per file, loaded under a memory limit.

    Every test that feeds pycocotools a hostile polygon or RLE goes through this, never in-process:
    before the loader validated coordinates one such polygon asked for tens of gigabytes.
    """

    def _run(image_dir, ann_files, headroom_mb=2500):
        script = Path(__file__).with_name("limited_load.py")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, str(script), str(headroom_mb), str(image_dir),
                               *map(str, ann_files)], capture_output=True, text=True, timeout=300, env=env,
                              cwd=_ROOT)
        assert done.returncode == 0, f"the load crashed (rc {done.returncode}):\n{done.stderr[-3000:]}"
        lines = done.stdout.splitlines()
        assert len(lines) == len(ann_files), done.stdout + done.stderr[-3000:]
        return lines

    return _run
