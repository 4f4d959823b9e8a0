"""The Predictor and its result files, per task, on mixed folders; COCO results score with COCOeval."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vertebra import load_model
from vertebra.deploy import Predictor
from vertebra.deploy.overlay import place_labels

from deploy_helpers import CLASS_NAMES, mixed_folder


def test_mixed_folder_predicts_the_readable_images_and_names_the_corrupt_one(tmp_path, artifacts):
    sizes = mixed_folder(tmp_path / "images")
    predictor = Predictor(artifacts["detection"], threshold=0.0, batch_size=4)
    summary = predictor.predict_to(tmp_path / "out", [tmp_path / "images"])

    assert (summary["images"], summary["predicted"], summary["failed"]) == (7, 6, 1)
    assert summary["failures"][0]["file_name"] == "broken.png" and "broken.png" in summary["failures"][0]["reason"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    listing = json.loads((tmp_path / "out" / "images.json").read_text())
    assert {i["file_name"]: (i["height"], i["width"]) for i in listing["images"]} == sizes
    assert [c["name"] for c in listing["categories"]] == list(CLASS_NAMES["detection"][1:])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results, "a random detector at threshold 0 still proposes boxes"
    ids = {i["id"]: i for i in listing["images"]}
    for result in results:
        image = ids[result["image_id"]]
        x, y, w, h = result["bbox"]
        assert result["file_name"] == image["file_name"]
        assert 0 <= x <= x + w <= image["width"] and 0 <= y <= y + h <= image["height"]
        assert CLASS_NAMES["detection"][result["category_id"]] == result["category_name"]
        assert 0.0 <= result["score"] <= 1.0
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert overlays == sorted(name.rsplit(".", 1)[0] + ".png" for name in sizes)


def test_batches_and_single_images_give_the_same_results(tmp_path, artifacts):
    mixed_folder(tmp_path / "images")
    (tmp_path / "images" / "broken.png").unlink()
    one = Predictor(artifacts["semantic"], batch_size=1).predict(tmp_path / "images")
    many = Predictor(artifacts["semantic"], batch_size=8).predict(tmp_path / "images")
    assert [p.name for p in one] == [p.name for p in many]
    for a, b in zip(one, many):
        assert torch.equal(a.output["mask"], b.output["mask"]), a.name


def _shapes_gt(tmp_path):
    from pycocotools.coco import COCO

    from vertebra.data import generate_shapes

    paths = generate_shapes(tmp_path / "shapes", num_train=1, num_val=3, image_size=64, seed=1)
    annotations = tmp_path / "shapes" / "annotations" / "instances_val.json"
    return tmp_path / "shapes" / "val", COCO(str(annotations)), paths


@pytest.mark.parametrize("task,kinds", [("detection", ("bbox",)), ("instance", ("bbox", "segm"))])
def test_coco_results_load_with_loadres_and_score_with_cocoeval(tmp_path, artifacts, task, kinds):
    from pycocotools.cocoeval import COCOeval

    images, gt, _ = _shapes_gt(tmp_path)
    Predictor(artifacts[task], threshold=0.0).predict_to(tmp_path / "out", images, overlays=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    listing = json.loads((tmp_path / "out" / "images.json").read_text())
    # match the run's image ids to the ground truth's by file name, as a user scoring a run would
    by_name = {record["file_name"]: record["id"] for record in gt.dataset["images"]}
    ours = {record["id"]: by_name[record["file_name"]] for record in listing["images"]}
    for result in results:
        result["image_id"] = ours[result["image_id"]]
    assert results and ("segmentation" in results[0]) == (task == "instance")
    detections = gt.loadRes(results)
    for kind in kinds:
        evaluator = COCOeval(gt, detections, kind)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert all(np.isfinite(evaluator.stats)) and -1.0 <= evaluator.stats[0] <= 1.0


SPARSE_IDS = {1: 7, 2: 42, 3: 90}      # the shapes' category ids 1, 2, 3 renumbered, with gaps


def _sparse_shapes(tmp_path):
    """The shapes val split with category ids 7, 42, 90 (the annotation file rewritten to say so)."""
    from pycocotools.coco import COCO

    from vertebra.data import generate_shapes

    generate_shapes(tmp_path / "shapes", num_train=1, num_val=3, image_size=64, seed=1)
    path = tmp_path / "shapes" / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    for category in data["categories"]:
        category["id"] = SPARSE_IDS[category["id"]]
    for ann in data["annotations"]:
        ann["category_id"] = SPARSE_IDS[ann["category_id"]]
    path.write_text(json.dumps(data))
    return tmp_path / "shapes" / "val", COCO(str(path))


def test_results_carry_the_artifacts_non_contiguous_category_ids_and_score_perfectly(tmp_path):
    """The model's label i is category SPARSE_IDS[i]; a runner that answers the ground truth itself must
    then score AP 1 against the user's annotation file, which needs results.json to speak its ids."""
    from pycocotools.cocoeval import COCOeval

    from deploy_helpers import random_artifact

    images, gt = _sparse_shapes(tmp_path)
    artifact = random_artifact("detection", tmp_path / "sparse.safetensors",
                               category_ids=[None, *SPARSE_IDS.values()])
    predictor = Predictor(artifact, batch_size=1)
    assert load_model(artifact).artifact.category_ids == (None, 7, 42, 90)   # carried by model_artifact
    label_of = {category: label for label, category in SPARSE_IDS.items()}
    records = iter(sorted(gt.dataset["images"], key=lambda r: r["file_name"]))   # the run's order

    def runner(batch):      # the ground truth as detections (detection preprocessing keeps the frame)
        anns = gt.imgToAnns[next(records)["id"]]
        return [{"boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]),
                 "scores": torch.ones(len(anns)),
                 "labels": torch.tensor([label_of[a["category_id"]] for a in anns])}]

    predictor.runner = runner
    predictor.predict_to(tmp_path / "out", images, overlays=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    listing = json.loads((tmp_path / "out" / "images.json").read_text())
    assert {c["id"] for c in listing["categories"]} == set(SPARSE_IDS.values())
    assert {r["category_id"] for r in results} <= set(SPARSE_IDS.values())
    assert all(gt.cats[r["category_id"]]["name"] == r["category_name"] for r in results)
    by_name = {record["file_name"]: record["id"] for record in gt.dataset["images"]}
    ours = {record["id"]: by_name[record["file_name"]] for record in listing["images"]}
    for result in results:
        result["image_id"] = ours[result["image_id"]]
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_instance_masks_are_in_the_original_frame(tmp_path, artifacts):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    prediction = Predictor(artifacts["instance"], threshold=0.0).predict([image]).predictions[0]
    output = prediction.output
    assert prediction.size == (48, 80) and prediction.name == "image_0000"
    assert output["masks"].dtype == torch.bool and output["masks"].shape == (len(output["boxes"]), 48, 80)


def test_semantic_writes_palette_masks_and_class_areas(tmp_path, artifacts):
    sizes = mixed_folder(tmp_path / "images")
    summary = Predictor(artifacts["semantic"]).predict_to(tmp_path / "out", tmp_path / "images")
    assert summary["threshold"] is None and summary["failed"] == 1
    areas = {entry["file_name"]: entry for entry in json.loads((tmp_path / "out" / "areas.json").read_text())}
    assert set(areas) == set(sizes)
    for name, (height, width) in sizes.items():
        mask = Image.open(tmp_path / "out" / "masks" / (name.rsplit(".", 1)[0] + ".png"))
        assert mask.mode == "P" and mask.size == (width, height)
        values = np.asarray(mask)
        assert values.max() < len(CLASS_NAMES["semantic"])
        entry = areas[name]["areas"]
        assert sum(v["pixels"] for v in entry.values()) == height * width
        assert sum(v["fraction"] for v in entry.values()) == pytest.approx(1.0, abs=1e-5)
        for index, class_name in enumerate(CLASS_NAMES["semantic"]):
            assert entry.get(class_name, {"pixels": 0})["pixels"] == int((values == index).sum())


def test_classification_writes_top_k_json_and_csv(tmp_path, artifacts):
    mixed_folder(tmp_path / "images")
    predictor = Predictor(artifacts["classification"], top_k=5)
    predictor.predict_to(tmp_path / "out", tmp_path / "images", overlays=False)
    rows = json.loads((tmp_path / "out" / "topk.json").read_text())
    assert len(rows) == 6
    for row in rows:
        top = row["top_k"]
        assert len(top) == 3                                     # k is capped at the number of classes
        assert [t["rank"] for t in top] == [1, 2, 3]
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
        assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-4)
        assert {t["class_name"] for t in top} == set(CLASS_NAMES["classification"])
    with open(tmp_path / "out" / "topk.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 18 and table[0]["file_name"] == rows[0]["file_name"]
    assert float(table[0]["score"]) == rows[0]["top_k"][0]["score"]
    strict = Predictor(artifacts["classification"], threshold=0.9).predict(tmp_path / "images")
    assert all(len(p.output["labels"]) == 0 for p in strict)   # nothing that sure: nothing listed


def test_load_model_returns_an_eval_model_carrying_its_artifact(artifacts):
    model = load_model(artifacts["semantic"])
    assert not model.training and model.artifact.task == "semantic"
    assert model.artifact.class_names == CLASS_NAMES["semantic"] and model.artifact.state_dict == {}
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64))["out"].shape == (1, 4, 64, 64)
    assert Predictor(model).task == "semantic"                  # a loaded model is a Predictor's input too


def test_labels_never_overprint():
    boxes = [(10.0, 10.0, 50.0, 50.0)] * 6 + [(100.0, 100.0, 140.0, 140.0)]
    spots = place_labels(boxes, [(30.0, 12.0)] * 7, 200.0, 200.0)
    rects = [(x, y, x + 30, y + 12) for x, y in filter(None, spots)]
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 200 and 0 <= a[1] and a[3] <= 200
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert spots[-1] is not None                                  # a free box always gets its label
    assert 3 <= sum(s is not None for s in spots[:6]) < 6         # a pile-up: some labels left out


def test_overlays_put_the_legend_beside_the_enlarged_image():
    from types import SimpleNamespace

    from vertebra.deploy.overlay import draw_overlay, palette
    from vertebra.deploy.predict import Prediction

    mask = torch.zeros(60, 90, dtype=torch.uint8)
    mask[10:30, 10:40], mask[35:55, 50:85], mask[:, :4] = 1, 3, 255
    prediction = Prediction("x.png", (60, 90), {"mask": mask}, image=torch.full((3, 60, 90), 120, dtype=torch.uint8))
    predictor = SimpleNamespace(task="semantic", class_names=CLASS_NAMES["semantic"], threshold=None, top_k=5)
    picture = np.asarray(draw_overlay(prediction, predictor))
    image_width = round(90 * 384 / 60)                             # enlarged to a 384 px shorter side
    assert picture.shape[0] >= 384 and picture.shape[1] > image_width
    legend = picture[:, image_width:].reshape(-1, 3)
    colours = palette(len(CLASS_NAMES["semantic"]))
    for index in (1, 3):                                           # the classes present get a swatch
        assert (legend == colours[index]).all(axis=1).any()
    assert not (legend == colours[2]).all(axis=1).any()            # an absent class does not


def test_a_training_output_folder_and_in_memory_images_are_accepted(tmp_path, artifacts):
    import shutil

    (tmp_path / "run").mkdir()
    shutil.copy(artifacts["classification"], tmp_path / "run" / "model.safetensors")
    pixels = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    run = Predictor(tmp_path / "run").predict([pixels, Image.fromarray(pixels.permute(1, 2, 0).numpy())])
    first, second = run.predictions
    assert (first.name, second.name, first.size) == ("image_0000", "image_0001", (40, 50))
    torch.testing.assert_close(first.output["probabilities"], second.output["probabilities"])
