"""load_weights on real vertebra models: torchvision checkpoints (random weights, saved locally) load
strictly through each model's own weights_key_map and give torchvision's outputs.  Nothing is downloaded:
named entries are pointed at the locally saved file's real hash with dataclasses.replace."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.models as tvm
import torchvision.models.detection as tvd
import torchvision.models.segmentation as tvs

from vertebra import registry
from vertebra.weights import cache
from vertebra.weights.cache import sha256_of
from vertebra.weights.entry import WeightsEntry
from vertebra.weights.names import get_weights_entry
from vertebra.backbones.mobilenetv3 import mobilenet_v3_small
from vertebra.errors import WeightsError
from vertebra.weights import load_weights


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "home"))

    def no_network(url, destination, progress):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(cache, "_download_url", no_network)


def _cache_as(name: str, state: dict) -> WeightsEntry:
    """Save ``state`` where entry ``name`` is cached and return the entry carrying this file's hash."""
    entry = get_weights_entry(name)
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, entry.path)
    return dataclasses.replace(entry, sha256=sha256_of(entry.path))


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_torchvision_mobilenet_v3_small_checkpoint_into_backbone(tmp_path):
    torch.manual_seed(0)
    reference = _randomise_bn(tvm.mobilenet_v3_small()).eval()
    torch.save(reference.state_dict(), tmp_path / "mnv3s.pth")
    backbone = mobilenet_v3_small().eval()
    report = load_weights(backbone, tmp_path / "mnv3s.pth")
    assert sorted(report.dropped) == sorted(k for k in reference.state_dict() if k.startswith("classifier."))
    assert report.loaded == len(backbone.state_dict()) and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["C5"], reference.features(x))


def test_named_imagenet_entry_into_registry_classifier():
    torch.manual_seed(0)
    reference = _randomise_bn(tvm.mobilenet_v3_small()).eval()
    entry = _cache_as("mobilenet_v3_small.imagenet", reference.state_dict())
    model = registry.build(entry.head, backbone=entry.backbone, **entry.head_kwargs, weights=entry).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_classification_entry_into_a_dense_models_backbone():
    """The remedy the head-mismatch error suggests actually works."""
    torch.manual_seed(0)
    entry = _cache_as("mobilenet_v3_large.imagenet", tvm.mobilenet_v3_large().state_dict())
    model = registry.build("lraspp", backbone="mobilenet_v3_large", num_classes=3)
    with pytest.raises(WeightsError, match=r"load_weights\(model\.backbone, 'mobilenet_v3_large\.imagenet'\)"):
        load_weights(model, entry)
    report = load_weights(model.backbone, entry)
    assert report.dropped and all(key.startswith("classifier.") for key in report.dropped)


@pytest.mark.parametrize("name, torchvision_builder", [
    ("lraspp_mobilenet_v3_large.coco_voc",
     lambda: tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)),
    ("deeplabv3_mobilenet_v3_large.coco_voc",
     lambda: tvs.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)),
    ("fasterrcnn_mobilenet_v3_large_fpn.coco",
     lambda: tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91)),
    ("fasterrcnn_mobilenet_v3_large_320_fpn.coco",
     lambda: tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)),
])
def test_dense_entry_builds_the_model_its_checkpoint_fits(name, torchvision_builder):
    """``registry.build(entry.head, backbone=entry.backbone, **entry.head_kwargs)`` takes the file strictly."""
    torch.manual_seed(0)
    reference = _randomise_bn(torchvision_builder()).eval()
    state = reference.state_dict()
    if name.startswith("fasterrcnn"):  # published detection checkpoints use FrozenBatchNorm2d: no counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    entry = _cache_as(name, state)
    model = registry.build(entry.head, backbone=entry.backbone, **entry.head_kwargs, weights=entry).eval()
    ours = model.state_dict()
    for key, value in state.items():
        mapped = model.weights_key_map.map_key(key)
        assert torch.equal(ours[mapped], value), key
    if name.startswith("lraspp"):
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x)["out"], reference(x)["out"])
