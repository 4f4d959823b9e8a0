"""Named checkpoints: the table mirrors torchvision, the cache, offline errors and downloads (never the network)."""

from __future__ import annotations

import re
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import torchvision.models.detection as tvd
import torchvision.models.segmentation as tvs
from torch import nn
from torch.hub import HASH_REGEX

from vertebra import registry
from vertebra.errors import WeightsError
from vertebra.weights import KeyMap, cache, load_weights
from vertebra.weights.cache import cache_dir, sha256_of
from vertebra.weights.entry import WeightsEntry, describe_entry
from vertebra.weights.names import get_weights_entry, named_weights
from vertebra.weights.torchvision import TORCHVISION_ENTRIES


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache and a downloader that fails the test if the network is touched."""
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VERTEBRA_OFFLINE", raising=False)

    def no_network(url, destination, progress):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(cache, "_download_url", no_network)


class Tiny(nn.Module):
    weights_key_map = KeyMap(drop=["classifier."])

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _published(tmp_path: Path) -> tuple[WeightsEntry, Path]:
    """A checkpoint 'on a server' (a local file) and its entry, like a torchvision row."""
    torch.manual_seed(0)
    source = Tiny()
    state = {**source.state_dict(), "classifier.weight": torch.ones(2, 4)}
    server = tmp_path / "server"
    server.mkdir()
    torch.save(state, server / "tiny.pth")
    digest = sha256_of(server / "tiny.pth")
    named = server / f"tiny-{digest[:8]}.pth"
    (server / "tiny.pth").rename(named)
    entry = WeightsEntry(name="tiny.test", url=named.as_uri(), sha256=digest[:8], backbone="tiny",
                         head="classifier", num_classes=2)
    return entry, named


# -- the table ----------------------------------------------------------------------------------
def _torchvision_weights(origin: str):
    enum_name, member = origin.removeprefix("torchvision.models.").split(".")
    for module in (tvm, tvs, tvd):
        if hasattr(module, enum_name):
            return getattr(getattr(module, enum_name), member), getattr(module, enum_name)
    raise AssertionError(f"{origin} is not a torchvision weights enum")


@pytest.mark.parametrize("entry", TORCHVISION_ENTRIES, ids=lambda entry: entry.name)
def test_entry_mirrors_torchvision(entry):
    name = entry.name
    weights, enum = _torchvision_weights(entry.origin)
    assert entry.url == weights.url
    assert entry.sha256 == HASH_REGEX.search(entry.filename).group(1)  # what torch.hub check_hash uses
    assert entry.sha256_is_prefix and len(entry.sha256) == 8
    assert entry.num_classes == len(weights.meta["categories"])
    # the un-suffixed name (".imagenet", ".coco", ".coco_voc") is torchvision's DEFAULT
    versioned = re.search(r"_v\d+$", name) is not None
    assert (weights is enum.DEFAULT) != versioned
    published = next(iter(weights.meta["_metrics"].values()))
    renamed = {"acc@1": "acc1", "acc@5": "acc5"}
    assert {renamed.get(k, k): v for k, v in published.items()} == entry.metrics


def test_table_covers_every_family_and_dense_checkpoint():
    names = set(named_weights())
    wanted = {f"efficientnet_b{i}.imagenet" for i in range(8)} | {
        f"efficientnet_v2_{s}.imagenet" for s in "sml"} | {
        "mobilenet_v3_large.imagenet", "mobilenet_v3_small.imagenet", "lraspp_mobilenet_v3_large.coco_voc",
        "deeplabv3_mobilenet_v3_large.coco_voc", "fasterrcnn_mobilenet_v3_large_fpn.coco",
        "fasterrcnn_mobilenet_v3_large_320_fpn.coco"}
    assert wanted <= names
    urls = [entry.url for entry in named_weights().values()]
    assert len(set(urls)) == len(urls)
    named_weights().clear()  # a copy: the table itself is not mutable from outside
    assert set(named_weights()) == names
    builtin = tuple(sorted(entry.name for entry in TORCHVISION_ENTRIES))  # registered by the built-in plugin
    assert next(p for p in registry.plugins() if p.name == "vertebra").weights == builtin


def test_describe_entry_is_plain_data():
    info = describe_entry(get_weights_entry("mobilenet_v3_small.imagenet"))
    assert info["sha256"] == "047dcff4" and info["sha256_is_prefix"] is True
    assert re.search(r"checkpoints/mobilenet_v3_small\.imagenet-[0-9a-f]{8}/mobilenet_v3_small-047dcff4\.pth$",
                     info["path"])
    assert info["metrics"] == {"acc1": 67.668, "acc5": 87.402}


# -- cache --------------------------------------------------------------------------------------
def test_cache_dir_honours_vertebra_home(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "home"
    monkeypatch.setenv("VERTEBRA_HOME", "~/elsewhere")
    assert cache_dir() == Path.home() / "elsewhere"
    monkeypatch.delenv("VERTEBRA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "vertebra"
    entry = get_weights_entry("efficientnet_b0.imagenet")
    assert entry.path.parent.parent == tmp_path / "user" / ".cache" / "vertebra" / "checkpoints"
    assert entry.path.name == entry.filename


def test_offline_error_names_the_exact_path_and_url(tmp_path, monkeypatch):
    def offline(url, destination, progress):
        Path(destination).write_bytes(b"partial")  # a failed download may leave bytes behind
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cache, "_download_url", offline)
    entry = get_weights_entry("mobilenet_v3_small.imagenet")
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(model, "mobilenet_v3_small.imagenet")
    message = str(info.value)
    expected = entry.path
    assert expected.parent.parent == tmp_path / "home" / "checkpoints"
    assert expected.name == "mobilenet_v3_small-047dcff4.pth"
    assert f"place it at '{expected}'" in message
    assert "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth" in message
    assert "Name or service not known" in message
    assert list(expected.parent.iterdir()) == []  # no partial file left, nothing at the target
    assert entry.path == expected
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("how", ["env", "argument"])
def test_downloads_can_be_disabled(monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("VERTEBRA_OFFLINE", "1")
    kwargs = {"download": False} if how == "argument" else {}
    with pytest.raises(WeightsError, match="downloads are disabled.*place it at"):
        load_weights(Tiny(), "efficientnet_b0.imagenet", **kwargs)  # the no_network fixture would fail


def test_download_lands_in_cache_and_is_reused(tmp_path, monkeypatch):
    entry, published = _published(tmp_path)
    calls = []

    def fake_download(url, destination, progress):
        calls.append(url)
        assert Path(destination).parent == entry.path.parent and Path(destination) != entry.path
        shutil.copyfile(published, destination)

    monkeypatch.setattr(cache, "_download_url", fake_download)
    model = Tiny()
    report = load_weights(model, entry)
    assert calls == [entry.url] and entry.path.is_file()
    assert report.path == entry.path and report.sha256 == sha256_of(published)
    assert report.dropped == ("classifier.weight",)
    assert sorted(p.name for p in entry.path.parent.iterdir()) == [entry.filename]
    load_weights(Tiny(), entry)
    assert calls == [entry.url]  # second time from the cache


def test_real_torch_hub_downloader_with_a_file_url(tmp_path, monkeypatch):
    monkeypatch.undo()  # restore the real _download_url (torch.hub.download_url_to_file)
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "home"))
    entry, published = _published(tmp_path)
    path = cache.resolve(entry, progress=False)
    assert path == entry.path and path.read_bytes() == published.read_bytes()


def test_download_with_wrong_hash_is_not_cached(tmp_path, monkeypatch):
    entry, published = _published(tmp_path)
    monkeypatch.setattr(cache, "_download_url",
                        lambda url, destination, progress: Path(destination).write_bytes(b"an html error page"))
    with pytest.raises(WeightsError, match="expected SHA-256 prefix"):
        load_weights(Tiny(), entry)
    assert list(entry.path.parent.iterdir()) == []


def test_cached_file_with_wrong_hash_is_refused_before_reading(tmp_path):
    entry = get_weights_entry("efficientnet_b0.imagenet")
    entry.path.parent.mkdir(parents=True)
    torch.save(Tiny().state_dict(), entry.path)  # a perfectly loadable file, but not the published one
    with pytest.raises(WeightsError) as info:
        load_weights(Tiny(), "efficientnet_b0.imagenet")
    assert str(entry.path) in str(info.value) and "expected SHA-256 prefix 7f5810bc" in str(info.value)
    assert "delete it" in str(info.value)


# -- entries are matched against the model's config before anything is fetched ------------------
def _with_backbone_at(path: str) -> nn.Module:
    """A model whose backbone (``features`` + ``feature_info``) sits at ``path``, like the real heads."""
    model = nn.Module()
    parent = model
    *parents, last = path.split(".")
    for name in parents:
        setattr(parent, name, nn.Module())
        parent = getattr(parent, name)
    backbone = Tiny()
    backbone.feature_info = ()
    setattr(parent, last, backbone)
    return model


@pytest.mark.parametrize("config, where, message", [
    ({"name": "mobilenet_v3_small"}, None, "are for backbone 'efficientnet_b0'.*backbone is 'mobilenet_v3_small'"),
    ({"head": "lraspp", "backbone": {"name": "efficientnet_b0"}}, "backbone",
     r"are a 'classifier' checkpoint.*head is 'lraspp'.*load_weights\(model\.backbone, 'efficientnet_b0"),
    ({"head": "fasterrcnn_fpn", "backbone": {"name": "builtin:efficientnet_b0"}}, "backbone.body",
     r"head is 'fasterrcnn_fpn'.*load_weights\(model\.backbone\.body, 'efficientnet_b0.imagenet'\)"),
])
def test_entry_for_another_model_is_refused_before_download(config, where, message):
    model = _with_backbone_at(where) if where else Tiny()
    model.config = config
    with pytest.raises(WeightsError, match=message):
        load_weights(model, "efficientnet_b0.imagenet")


def test_matching_config_proceeds_to_the_cache(tmp_path, monkeypatch):
    entry, published = _published(tmp_path)
    monkeypatch.setattr(cache, "_download_url", lambda url, dst, progress: shutil.copyfile(published, dst))
    model = Tiny()
    model.config = {"head": "classifier", "backbone": {"name": "tiny"}, "num_classes": 2}
    model.weights_key_map = KeyMap(drop=["classifier."])
    assert load_weights(model, entry).loaded == 7  # conv weight, bias + 5 BatchNorm tensors
