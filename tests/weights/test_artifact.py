"""The model artifact: a round trip rebuilds the same model; anything else is a clear ArtifactError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vertebra import registry
from vertebra.errors import ArtifactError, ConfigError
from vertebra.weights import Preprocessing, read_artifact, save_artifact
from vertebra.weights import artifact as artifact_module

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return registry.build("classifier", backbone="mobilenet_v3_small", num_classes=3).eval()


def _save(path, model, **overrides):
    options = dict(task="classification", class_names=["cat", "dog", "eel"],
                   preprocessing=Preprocessing("shorter_crop", 64, 56, **IMAGENET), metadata={"source": "test"})
    options.update(overrides)
    return save_artifact(path, model, **options)


def test_round_trip_rebuilds_the_same_model(tmp_path, model):
    path = _save(tmp_path / "model.safetensors", model)
    art = read_artifact(path)
    assert art.task == "classification" and art.class_names == ("cat", "dog", "eel")
    assert art.preprocessing == Preprocessing("shorter_crop", 64, 56, **IMAGENET)
    assert art.metadata == {"source": "test"}
    rebuilt = registry.build_from_config(art.config).eval()
    rebuilt.load_state_dict(art.state_dict, strict=True)
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_a_flipped_byte_in_the_tensors_is_refused(tmp_path, model):
    path = _save(tmp_path / "model.safetensors", model)
    data = bytearray(path.read_bytes())
    data[-64] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        read_artifact(path)


def test_a_changed_header_is_refused_like_a_changed_tensor(tmp_path, model):
    path = _save(tmp_path / "model.safetensors", model)
    _rewrite_header(path, reseal=False, class_names=["dog", "cat"])
    with pytest.raises(ArtifactError, match="damaged"):
        read_artifact(path)


def _rewrite_header(path, reseal=True, drop=(), **changes):
    """Edit the header (``drop``: keys to remove); ``reseal`` records a matching digest (a well-formed
    file with odd content)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["vertebra"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    header.update(changes)
    for key in drop:
        header.pop(key, None)
    if reseal:
        header["sha256"] = artifact_module._artifact_digest(header, tensors)
    save_file(tensors, str(path), metadata={"vertebra": json.dumps(header)})


@pytest.mark.parametrize("version, advice", [(3, "upgrade vertebra"), (0, "re-export"), ("2", "re-export")])
def test_another_format_version_names_both_versions(tmp_path, model, version, advice):
    path = _save(tmp_path / "model.safetensors", model)
    _rewrite_header(path, version=version)
    with pytest.raises(ArtifactError, match=rf"version {version!r}.*reads versions 1 and 2.*{advice}"):
        read_artifact(path)


def test_category_ids_round_trip_as_a_header_field(tmp_path, model):
    path = _save(tmp_path / "model.safetensors", model, category_ids=[7, 90, 3])
    art = read_artifact(path)
    assert art.category_ids == (7, 90, 3) and "category_ids" not in art.metadata
    assert read_artifact(_save(tmp_path / "plain.safetensors", model)).category_ids is None
    _rewrite_header(path, reseal=False, category_ids=[7, 90, 4])     # covered by the digest like the rest
    with pytest.raises(ArtifactError, match="damaged"):
        read_artifact(path)


def _version_1(path, **metadata):
    """Rewrite an artifact as a version-1 file: no category_ids field, ids (if any) in metadata."""
    from safetensors import safe_open

    _rewrite_header(path, version=1, metadata={"source": "test", **metadata}, drop=("category_ids",))
    with safe_open(str(path), framework="pt") as handle:
        assert "category_ids" not in json.loads(handle.metadata()["vertebra"])


def test_a_version_1_file_still_loads_with_its_metadata_category_ids(tmp_path, model):
    path = _save(tmp_path / "old.safetensors", model)
    _version_1(path, category_ids=[None, 5, 9])
    art = read_artifact(path)
    assert art.category_ids == (None, 5, 9) and art.class_names == ("cat", "dog", "eel")
    assert art.metadata["source"] == "test"
    _version_1(path, category_ids=["not", "ids"])                    # free-form then: ignored, not refused
    assert read_artifact(path).category_ids is None
    _version_1(path)
    assert read_artifact(path).category_ids is None


def test_a_version_2_file_ignores_metadata_category_ids(tmp_path, model):
    path = _save(tmp_path / "model.safetensors", model)
    _rewrite_header(path, metadata={"category_ids": [None, 5, 9]})
    assert read_artifact(path).category_ids is None                  # only the field counts from version 2


@pytest.mark.parametrize("ids, match", [
    ([1, 2], "2 ids for 3 class names"),
    ([1, 2, 3, 4], "4 ids for 3 class names"),
    ([1, None, 3], r"\[1\] \('dog'\) is None"),
    ([1, 2.0, 3], r"\[1\] \('dog'\) is 2.0"),
    ([True, 2, 3], r"\[0\] \('cat'\) is True"),
    ([1, "2", 3], "category ids are ints"),
    ([1, 2, 1], r"category id\(s\) \[1\] to more than one class"),
    ("123", "must be a list"),
    ({"cat": 1}, "must be a list"),
])
def test_invalid_category_ids_are_refused_on_save_and_on_read(tmp_path, model, ids, match):
    with pytest.raises(ConfigError, match=match) as caught:
        _save(tmp_path / "a.safetensors", model, category_ids=ids)
    assert caught.value.path == "category_ids" and not list(tmp_path.iterdir())
    path = _save(tmp_path / "b.safetensors", model)
    _rewrite_header(path, category_ids=ids)                          # a well-sealed file with a bad field
    with pytest.raises(ArtifactError, match=rf"malformed artifact header \(category_ids: .*{match}"):
        read_artifact(path)


def test_category_ids_in_metadata_are_refused_on_save(tmp_path, model):
    with pytest.raises(ConfigError, match=r"save_artifact\(\.\.\., category_ids="):
        _save(tmp_path / "a.safetensors", model, metadata={"category_ids": [None, 1, 2]})


def test_files_that_are_not_artifacts(tmp_path, model):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(tmp_path / "missing.safetensors")
    plain = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ArtifactError, match="not a vertebra model artifact"):
        read_artifact(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(ArtifactError, match="not a readable model artifact"):
        read_artifact(junk)
    path = _save(tmp_path / "model.safetensors", model)
    _rewrite_header(path, class_names=None)
    with pytest.raises(ArtifactError, match="malformed"):
        read_artifact(path)


def test_what_save_refuses(tmp_path, model):
    with pytest.raises(ConfigError, match="task"):
        _save(tmp_path / "a.safetensors", model, task="panoptic")
    with pytest.raises(ArtifactError, match="class names"):
        _save(tmp_path / "a.safetensors", model, class_names=[])
    with pytest.raises(ArtifactError, match="config"):
        _save(tmp_path / "a.safetensors", torch.nn.Linear(2, 2))
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("fields, path", [
    (dict(resize="stretch"), "preprocessing.resize"),
    (dict(resize="square", size=0), "preprocessing.size"),
    (dict(resize="shorter_crop", size=64), "preprocessing.crop"),
    (dict(mean=(0.5, 0.5, 0.5)), "preprocessing"),
    (dict(mean=(0.5, 0.5), std=(1, 1)), "preprocessing.mean"),
    (dict(mean=(0.5, 0.5, 0.5), std=(1, 0, 1)), "preprocessing.std"),
    (dict(mean=(0.5, float("nan"), 0.5), std=(1, 1, 1)), "preprocessing.mean"),
])
def test_preprocessing_is_validated(fields, path):
    with pytest.raises(ConfigError) as caught:
        Preprocessing(**fields)
    assert caught.value.path == path


def test_preprocessing_from_dict_refuses_unknown_keys():
    assert Preprocessing.from_dict(Preprocessing("square", 32).to_dict()) == Preprocessing("square", 32)
    with pytest.raises(ConfigError, match="sise"):
        Preprocessing.from_dict({"resize": "square", "sise": 32})


def test_digest_covers_names_shapes_and_values():
    a = {"w": torch.arange(4.0)}
    assert artifact_module.tensor_digest(a) == artifact_module.tensor_digest({"w": torch.arange(4.0)})
    assert artifact_module.tensor_digest(a) != artifact_module.tensor_digest({"v": torch.arange(4.0)})
    assert artifact_module.tensor_digest(a) != artifact_module.tensor_digest({"w": torch.arange(4.0).reshape(2, 2)})
    assert artifact_module.tensor_digest(a) != artifact_module.tensor_digest({"w": torch.arange(4.0) + 1})
