"""Train (tiny) -> predict with nothing but the artifact -> the in-process model's predictions."""

from __future__ import annotations

import shutil

import pytest
import torch
from torchvision import tv_tensors

from vertebra.data import classification_transforms, segmentation_transforms
from vertebra.deploy import Predictor
from vertebra.deploy.images import load_image
from vertebra.engine import train

from deploy_helpers import tiny, write_image_folder


def _train(tmp_path, task):
    config = tiny(task)
    if task == "classification":
        write_image_folder(tmp_path / "images")
        config["data"]["root"] = str(tmp_path / "images")
    result = train(config, out_dir=tmp_path / "run", progress=False)
    images = tmp_path / ("images/val" if task == "classification" else "run/data/val")
    # keep copies of the images and the artifact alone; everything else of the run goes
    shutil.copytree(images, tmp_path / "to_predict")
    shutil.copy(tmp_path / "run" / "model.safetensors", tmp_path / "model.safetensors")
    shutil.rmtree(tmp_path / "run")
    shutil.rmtree(tmp_path / "images", ignore_errors=True)
    return result.model.eval(), tmp_path / "to_predict", tmp_path / "model.safetensors"


def _in_process(model, task, image):
    """What the trained model says on one decoded image, preprocessed by the training transforms."""
    with torch.no_grad():
        if task == "detection":
            return model([image.float() / 255])[0]
        if task == "semantic":
            x = segmentation_transforms(False, 64)(tv_tensors.Image(image)).as_subclass(torch.Tensor)
            return {"mask": model(x[None])["out"][0].argmax(0).to(torch.uint8)}
        x = classification_transforms(False, 32)(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        return {"probabilities": model(x[None])[0].softmax(-1)}


@pytest.mark.parametrize("task", ["detection", "semantic", "classification"])
def test_predictions_from_the_artifact_alone_equal_the_trained_model(tmp_path, task):
    model, images, artifact = _train(tmp_path, task)
    predictions = Predictor(artifact, threshold=0.0 if task == "detection" else None).predict(images)
    assert len(predictions) == len(list(p for p in images.rglob("*") if p.is_file())) > 0
    if task == "detection":
        assert sum(len(p.output["boxes"]) for p in predictions) > 0     # something to compare
    for prediction in predictions:
        expected = _in_process(model, task, load_image(prediction.path))
        if task == "detection":
            for key in ("boxes", "scores", "labels"):
                torch.testing.assert_close(prediction.output[key], expected[key].to(prediction.output[key].dtype),
                                           rtol=1e-5, atol=1e-4)
        else:
            key = next(iter(expected))
            torch.testing.assert_close(prediction.output[key], expected[key], rtol=1e-5, atol=1e-6)
