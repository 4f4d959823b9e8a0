"""load_weights: key maps, containers, strict checks, and 'the model is untouched on any failure'."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra.weights.cache import sha256_of
from vertebra.errors import UnknownNameError, VertebraError, WeightsError
from vertebra.weights import KeyMap, LoadReport, load_weights


# -- tiny stand-ins for torchvision's classification layout and vertebra's models -------------
def _features() -> nn.Sequential:
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU()))


class TorchvisionLike(nn.Module):
    """``features.*`` + ``classifier.*``, like torchvision's EfficientNet / MobileNetV3."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = _features()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, classes))


class TinyBackbone(nn.Module):
    weights_key_map = KeyMap.torchvision_classification()

    def __init__(self):
        super().__init__()
        self.features = _features()


class TinyClassifier(nn.Module):
    """vertebra's classifier layout: backbone.features.* + head.classifier.*"""

    weights_key_map = KeyMap.torchvision_classification(prefix="backbone.", classifier="head.classifier.")

    def __init__(self, classes: int = 5):
        super().__init__()
        self.backbone = TinyBackbone()
        self.head = nn.Module()
        self.head.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, classes))


def _reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = TorchvisionLike()
    for module in model.modules():  # non-default statistics so a skipped copy would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    return model.state_dict()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_same(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert torch.equal(state[key], value), f"{key} changed"


# -- KeyMap -------------------------------------------------------------------------------------
def test_keymap_rules_are_ordered_and_drops_come_first():
    key_map = KeyMap(rules=[("features.0.", "stem."), ("features.", "body."), ("classifier.", "head.")],
                     drop=["classifier.1.bias"])
    assert key_map.map_key("features.0.0.weight") == "stem.0.weight"      # first matching rule wins
    assert key_map.map_key("features.1.0.weight") == "body.1.0.weight"
    assert key_map.map_key("classifier.1.bias") is None                  # dropped before any rule
    assert key_map.map_key("classifier.1.weight") == "head.1.weight"
    assert key_map.map_key("other.weight") == "other.weight"             # no rule: unchanged
    assert key_map.rules == (("features.0.", "stem."), ("features.", "body."), ("classifier.", "head."))


def test_keymap_apply_reports_drops_and_refuses_collisions():
    state = {"features.0.weight": torch.ones(1), "classifier.weight": torch.ones(1)}
    renamed, dropped = KeyMap.torchvision_classification().apply(state)
    assert list(renamed) == ["features.0.weight"] and dropped == ["classifier.weight"]
    with pytest.raises(WeightsError, match="sends both 'a.x' and 'b.x' to 'c.x'"):
        KeyMap(rules=[("a.", "c."), ("b.", "c.")]).apply({"a.x": 1, "b.x": 2})


@pytest.mark.parametrize("bad", [{"rules": [("only-one",)]}, {"rules": [("", "x.")]}, {"rules": [("a.", 3)]},
                                 {"drop": "classifier."}, {"drop": [""]}])
def test_keymap_rejects_malformed_declarations(bad):
    with pytest.raises(TypeError):
        KeyMap(**bad)


def test_torchvision_classification_maps():
    assert KeyMap.torchvision_classification() == KeyMap(drop=("classifier.",))
    assert KeyMap.torchvision_classification("backbone.") == KeyMap(
        rules=[("features.", "backbone.features.")], drop=["classifier."])
    assert KeyMap.torchvision_classification("backbone.", "head.classifier.") == KeyMap(
        rules=[("features.", "backbone.features."), ("classifier.", "head.classifier.")])


# -- successful loads ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_full_checkpoint_loads_strictly_through_the_key_map(tmp_path, suffix):
    reference = _reference()
    path = tmp_path / f"tv{suffix}"
    save_file(reference, str(path)) if suffix == ".safetensors" else torch.save(reference, path)
    model = TinyClassifier()
    report = load_weights(model, path)
    assert isinstance(report, LoadReport)
    assert report.mapped and report.dropped == () and report.loaded == len(reference)
    assert report.path == path and report.source == str(path)
    state = model.state_dict()
    for key, value in reference.items():
        ours = key.replace("features.", "backbone.features.", 1) if key.startswith("features.") \
            else "head." + key
        assert torch.equal(state[ours], value), key
    tv = TorchvisionLike().eval()
    tv.load_state_dict(reference)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    pooled = model.backbone.features(x).mean((2, 3))
    torch.testing.assert_close(model.head.classifier(pooled), tv.classifier(tv.features(x).mean((2, 3))))


def test_backbone_from_classification_checkpoint_drops_classifier_explicitly(tmp_path):
    reference = _reference()
    torch.save(reference, tmp_path / "tv.pth")
    backbone = TinyBackbone()
    report = load_weights(backbone, tmp_path / "tv.pth")
    assert sorted(report.dropped) == ["classifier.1.bias", "classifier.1.weight"]
    assert "dropped 2 on purpose (classifier.* (2))" in str(report)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, reference[key])


def test_own_state_dict_loads_without_mapping(tmp_path):
    source = TinyClassifier()
    torch.save(source.state_dict(), tmp_path / "own.pt")
    report = load_weights(TinyClassifier(), tmp_path / "own.pt")
    assert not report.mapped and report.dropped == ()


def test_model_without_key_map_loads_identical_names():
    model = nn.Sequential(nn.Linear(2, 3))
    report = load_weights(model, {"0.weight": torch.ones(3, 2), "0.bias": torch.zeros(3)})
    assert report.source == "<state_dict>" and report.loaded == 2
    assert torch.equal(model[0].weight, torch.ones(3, 2))


@pytest.mark.parametrize("wrap, unwrapped", [
    (lambda sd: {"state_dict": sd}, ("state_dict",)),
    (lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 3}, ("model",)),
    (lambda sd: {"state_dict": {"model": sd}}, ("state_dict", "model")),
    (lambda sd: {f"module.{k}": v for k, v in sd.items()}, ("module.",)),
])
def test_training_containers_are_unwrapped_and_reported(tmp_path, wrap, unwrapped):
    torch.save(wrap(_reference()), tmp_path / "ck.pt")
    report = load_weights(TinyClassifier(), tmp_path / "ck.pt")
    assert report.unwrapped == unwrapped
    assert "unwrapped" in str(report)


def test_missing_num_batches_tracked_keeps_the_models_counter():
    reference = {k: v for k, v in _reference().items() if not k.endswith("num_batches_tracked")}
    model = TinyClassifier()
    report = load_weights(model, reference)
    assert report.kept == ("backbone.features.0.1.num_batches_tracked", "backbone.features.1.1.num_batches_tracked")
    assert torch.equal(model.backbone.features[0][1].running_mean, reference["features.0.1.running_mean"])


def test_frozen_batchnorm_ignores_num_batches_tracked_and_says_so():
    model = TinyBackbone()
    model.features[0][1] = FrozenBatchNorm2d(4)
    report = load_weights(model, _reference())
    assert "features.0.1.num_batches_tracked" in report.dropped
    assert torch.equal(model.features[0][1].running_var, _reference()["features.0.1.running_var"])


def test_non_strict_loads_the_overlap_and_lists_the_rest():
    reference = _reference()
    reference["extra.weight"] = torch.ones(2)
    del reference["classifier.1.bias"]
    model = TinyClassifier()
    report = load_weights(model, reference, strict=False)
    assert report.missing == ("head.classifier.1.bias",) and report.unexpected == ("extra.weight",)
    assert "1 missing" in str(report) and "1 unexpected" in str(report)
    assert torch.equal(model.head.classifier[1].weight, reference["classifier.1.weight"])


def test_key_map_argument_overrides_the_models():
    model = nn.Module()
    model.body = _features()
    load_weights(model, _reference(), key_map=KeyMap(rules=[("features.", "body.")], drop=["classifier."]))
    assert torch.equal(model.body[0][0].weight, _reference()["features.0.0.weight"])


def test_local_file_hash_is_checked_when_given(tmp_path):
    torch.save(_reference(), tmp_path / "tv.pth")
    digest = sha256_of(tmp_path / "tv.pth")
    assert load_weights(TinyClassifier(), tmp_path / "tv.pth", sha256=digest[:10]).sha256 == digest


# -- every failure: a WeightsError that says what is wrong, and the model is unchanged ---------
def _bad_sources(tmp_path):
    reference = _reference()
    good = tmp_path / "good.pth"
    torch.save(reference, good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 50)
    (tmp_path / "corrupt.safetensors").write_bytes(b"\xff" * 40)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"optimizer": {}, "epoch": 1}, tmp_path / "noweights.pth")
    wrong_shape = TorchvisionLike(classes=7).state_dict()
    missing = {k: v for k, v in reference.items() if k != "features.1.0.weight"}
    unexpected = {**reference, "features.9.weight": torch.ones(1)}
    return {
        "truncated": (tmp_path / "truncated.pth", {}, "truncated or corrupt"),
        "corrupt": (tmp_path / "corrupt.pth", {}, "truncated or corrupt"),
        "corrupt safetensors": (tmp_path / "corrupt.safetensors", {}, "truncated or corrupt"),
        "bad hash": (good, {"sha256": "0" * 64}, "expected SHA-256 0000"),
        "not a dict": (tmp_path / "list.pth", {}, "expected a state dict"),
        "no state dict": (tmp_path / "noweights.pth", {}, "top-level keys: 'optimizer', 'epoch'"),
        "missing key": (missing, {}, "missing (in the model, not in the file): backbone.features.1.0.weight"),
        "unexpected key": (unexpected, {}, "unexpected (in the file, not in the model): backbone.features.9.weight"),
        "shape": (wrong_shape, {}, "head.classifier.1.weight file [7, 6] vs model [5, 6]"),
        "shape non-strict": (wrong_shape, {"strict": False}, "with another shape"),
        "nothing shared": ({"x.weight": torch.ones(1)}, {"strict": False}, "nothing would load"),
        "no such file": (tmp_path / "nope.pth", {}, "does not exist"),
    }


@pytest.mark.parametrize("case", ["truncated", "corrupt", "corrupt safetensors", "bad hash", "not a dict",
                                  "no state dict", "missing key", "unexpected key", "shape", "shape non-strict",
                                  "nothing shared", "no such file"])
def test_failed_load_raises_and_leaves_model_untouched(tmp_path, case):
    source, kwargs, expected = _bad_sources(tmp_path)[case]
    model = TinyClassifier()
    before = _snapshot(model)
    with pytest.raises(WeightsError) as info:
        load_weights(model, source, **kwargs)
    assert expected in str(info.value)
    if not isinstance(source, dict):
        assert str(source) in str(info.value)  # names the file
    _assert_same(model, before)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"w": torch.ones(1), "f": nn.Linear(1, 1)}, tmp_path / "module.pth")  # pickles a class
    with pytest.raises(WeightsError, match="not unpickled under weights_only=True"):
        load_weights(TinyClassifier(), tmp_path / "module.pth")


def test_long_key_lists_are_truncated_and_a_prefix_fix_is_suggested():
    model = TinyClassifier()
    model.weights_key_map = None  # forgot to declare the map
    with pytest.raises(WeightsError) as info:
        load_weights(model, _reference())
    message = str(info.value)
    assert "... and 2 more" in message  # 12 missing (num_batches_tracked may be absent), 10 shown
    assert "KeyMap(rules=[('features.', 'backbone.features.'), ('classifier.', 'head.classifier.')])" in message
    assert "the model was not changed" in message


def test_dropped_keys_are_mentioned_when_the_load_fails():
    model = TinyClassifier()
    model.weights_key_map = KeyMap.torchvision_classification("backbone.")  # drops the classifier by mistake
    with pytest.raises(WeightsError, match=r"dropped 2 file keys on purpose: classifier\.1\.weight"):
        load_weights(model, _reference())


def test_meta_model_is_refused():
    with torch.device("meta"):
        model = TinyClassifier()
    with pytest.raises(WeightsError, match="meta device.*to_empty"):
        load_weights(model, _reference())


def test_bad_sources_and_bad_maps_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="must be a file path, a checkpoint name"):
        load_weights(TinyClassifier(), 42)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(TinyClassifier(), "weights/efficientnet_b0.pth")
    with pytest.raises(UnknownNameError, match="did you mean 'efficientnet_b0.imagenet'|efficientnet_b0.imagenet"):
        load_weights(TinyClassifier(), "efficientnet_b0.imagenett")
    model = TinyClassifier()
    model.weights_key_map = {"features.": "backbone.features."}
    with pytest.raises(WeightsError, match="must be a vertebra.weights.KeyMap"):
        load_weights(model, _reference())


def test_errors_are_catchable_as_vertebra_error(tmp_path):
    with pytest.raises(VertebraError):
        load_weights(TinyClassifier(), tmp_path / "nope.safetensors")
