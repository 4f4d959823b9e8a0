"""Named weights from plugins: the ``vertebra_register_weights`` hook, end to end and in isolation.

A fake plugin (a real entry point) registers a checkpoint it publishes as a ``file://`` URL; loading
it by name goes through the same cache, hash check and strict load as vertebra's own torchvision
entries.  A plugin that registers something wrong fails alone, and leaves nothing registered.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from vertebra import cli, registry
from vertebra.weights.cache import cache_path, sha256_of
from vertebra.errors import ConfigError, PluginError, UnknownNameError, WeightsError
from vertebra.plugins import PluginWarning, WeightsEntry
from vertebra.weights import get_weights_entry, load_weights, named_weights

BACKBONE = "mobilenet_v3_small"


def _weights_plugin(*entries: str, body: str = "") -> str:
    """Source of a plugin whose weights hook registers each ``WeightsEntry(...)`` expression."""
    lines = ["from vertebra.plugins import WeightsEntry, hookimpl", body, "",
             "@hookimpl", "def vertebra_register_weights(register):"]
    lines += [f"    register({entry})" for entry in entries] or ["    pass"]
    return "\n".join(lines) + "\n"


def _entry(name: str, file, *, sha256: str | None = None, head: str = "classifier", num_classes: int = 1000,
           backbone_kwargs: dict | None = None) -> str:
    sha256 = sha256 or sha256_of(file)
    return (f"WeightsEntry(name={name!r}, url={file.as_uri()!r}, sha256={sha256!r}, backbone={BACKBONE!r}, "
            f"head={head!r}, num_classes={num_classes}, metrics={{'acc1': 12.5}}, notes='synthetic', "
            f"backbone_kwargs={backbone_kwargs or {}!r})")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VERTEBRA_OFFLINE", raising=False)
    return tmp_path / "home"


@pytest.fixture
def published(tmp_path):
    """A backbone checkpoint 'published' by the plugin (random weights, non-trivial BN statistics)."""
    torch.manual_seed(0)
    source = registry.build_backbone(BACKBONE)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    file = tmp_path / "published" / "mnv3s_synthetic-0123abcd.pth"
    file.parent.mkdir()
    torch.save(source.state_dict(), file)
    return source.eval(), file


def test_plugin_weights_load_by_name_through_the_cache(make_plugin, home, published, capsys):
    source, file = published
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.synthetic", file)), ep="pubs", dist="pubs-dist")
    assert registry.list_weights("*synthetic") == ["mobilenet_v3_small.synthetic"]
    assert next(p for p in registry.plugins() if p.name == "pubs").weights == ("mobilenet_v3_small.synthetic",)
    assert "efficientnet_b0.imagenet" in named_weights()  # the built-in table is still there
    entry = get_weights_entry("pubs:mobilenet_v3_small.synthetic")
    assert entry is named_weights()["mobilenet_v3_small.synthetic"] and entry.metrics["acc1"] == 12.5
    assert registry.describe(BACKBONE).weights == ("mobilenet_v3_small.imagenet", "mobilenet_v3_small.synthetic")
    assert "mobilenet_v3_small.synthetic" in registry.describe("classifier").weights
    assert "mobilenet_v3_small.synthetic" not in registry.describe("lraspp").weights
    assert cli.main(["info", BACKBONE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == list(registry.describe(BACKBONE).weights)

    loaded = registry.build_backbone(BACKBONE, weights="mobilenet_v3_small.synthetic").eval()
    cached = cache_path(get_weights_entry("pubs:mobilenet_v3_small.synthetic"))
    assert cached.is_relative_to(home / "checkpoints") and cached.name == file.name
    assert cached.read_bytes() == file.read_bytes()  # fetched into the cache
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(loaded(x).values(), source(x).values()):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_plugin_weights_for_a_classifier_refuse_another_head_before_fetching(make_plugin, home, tmp_path):
    torch.manual_seed(1)
    model = registry.build("classifier", backbone=BACKBONE, num_classes=3)
    file = tmp_path / "cls-89abcdef.pth"
    torch.save(model.state_dict(), file)
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.three", file, num_classes=3)), ep="pubs")
    again = registry.build("classifier", backbone=BACKBONE, num_classes=3, weights="mobilenet_v3_small.three")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    with pytest.raises(WeightsError, match="'mobilenet_v3_small.three' are a 'classifier' checkpoint"):
        registry.build("lraspp", backbone=BACKBONE, num_classes=3, weights="mobilenet_v3_small.three")
    assert not (home / "checkpoints" / "lraspp").exists()


def test_weights_of_a_non_default_backbone_need_its_options_and_refuse_others_before_fetching(
        make_plugin, home, tmp_path, capsys):
    torch.manual_seed(2)
    narrow = {"name": BACKBONE, "width_mult": 0.75}
    model = registry.build("lraspp", backbone=narrow, num_classes=3)
    file = tmp_path / "narrow-0f1e2d3c.pth"
    torch.save(model.state_dict(), file)
    entry = _entry("mobilenet_v3_small.narrow", file, head="lraspp", num_classes=3,
                   backbone_kwargs={"width_mult": 0.75})
    make_plugin(_weights_plugin(entry), ep="pubs")
    for backbone, got in [(BACKBONE, "width_mult=1.0"), ({"name": BACKBONE, "width_mult": 0.5}, "width_mult=0.5")]:
        with pytest.raises(WeightsError, match=f"trained with backbone option\\(s\\) width_mult=0.75, but this "
                                               f"model's backbone has {got}; build it with backbone="
                                               f"{{'name': 'mobilenet_v3_small', 'width_mult': 0.75}}"):
            registry.build("lraspp", backbone=backbone, num_classes=3, weights="mobilenet_v3_small.narrow")
    assert not (home / "checkpoints").exists()  # refused before anything was fetched
    again = registry.build("lraspp", backbone=narrow, num_classes=3, weights="mobilenet_v3_small.narrow")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert cli.main(["info", "mobilenet_v3_small.narrow"]) == 0
    assert ("registry.build('lraspp', backbone={'name': 'mobilenet_v3_small', 'width_mult': 0.75}, num_classes=3, "
            "weights='mobilenet_v3_small.narrow')") in capsys.readouterr().out
    assert cli.main(["list", "*narrow"]) == 0
    assert "lraspp on mobilenet_v3_small width_mult=0.75, 3 classes" in capsys.readouterr().out


def test_a_wrong_published_file_is_refused_and_nothing_is_cached(make_plugin, home, published):
    source, file = published
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.synthetic", file, sha256="deadbeef")), ep="pubs")
    model = registry.build_backbone(BACKBONE)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(WeightsError, match="expected SHA-256 prefix deadbeef"):
        load_weights(model, "mobilenet_v3_small.synthetic")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (home / "checkpoints" / file.name).exists()


def test_cli_lists_and_describes_plugin_weights(make_plugin, home, published, no_builtins, capsys):
    _, file = published
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.synthetic", file)), ep="pubs")
    assert cli.main(["list", "--kind", "weights", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"name": "mobilenet_v3_small.synthetic", "kind": "weights", "plugin": "pubs",
         "summary": "classifier on mobilenet_v3_small, 1000 classes; acc1 12.5"}]
    assert cli.main(["info", "pubs:mobilenet_v3_small.synthetic"]) == 0
    out = capsys.readouterr().out
    assert file.as_uri() in out and "weights='mobilenet_v3_small.synthetic')" in out
    for key, value in [("metric acc1", "12.5"), ("plugin", "pubs"), ("notes", "synthetic"),
                       ("qualified name", "pubs:mobilenet_v3_small.synthetic")]:
        assert re.search(f"^{key} +{re.escape(value)}$", out, re.M), key
    assert cli.main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["weights"] == ["mobilenet_v3_small.synthetic"]
    assert cli.main(["info", "mobilenet_v3_small.synthtic"]) == 2
    assert "did you mean mobilenet_v3_small.synthetic?" in capsys.readouterr().err


def test_two_plugins_with_one_weights_name_need_the_qualified_name(make_plugin, home, published, no_builtins,
                                                                    capsys):
    _, file = published
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.synthetic", file)), ep="first")
    make_plugin(_weights_plugin(_entry("mobilenet_v3_small.synthetic", file, num_classes=7)), ep="second")
    with pytest.warns(PluginWarning, match="weights 'mobilenet_v3_small.synthetic'"):
        names = registry.list_weights()
    assert names == ["first:mobilenet_v3_small.synthetic", "second:mobilenet_v3_small.synthetic"]
    with pytest.raises(PluginError, match="use the qualified name 'first:mobilenet_v3_small.synthetic' or"):
        get_weights_entry("mobilenet_v3_small.synthetic")
    assert get_weights_entry("second:mobilenet_v3_small.synthetic").num_classes == 7
    assert sorted(named_weights()) == names
    assert cli.main(["info", "second:mobilenet_v3_small.synthetic"]) == 0  # a call that works, as printed
    assert "num_classes=7, weights='second:mobilenet_v3_small.synthetic')" in capsys.readouterr().out
    registry.unregister_plugin("second")
    assert registry.list_weights() == ["mobilenet_v3_small.synthetic"]


@pytest.mark.parametrize("registered, message", [  # what the hook passes to register(), call by call
    (["{'name': 'x.y'}"], "registered {'name': 'x.y'} as weights; register a vertebra.plugins.WeightsEntry"),
    (["_bad()"], "url: weights entry 'my_net.imagenet': url must be an https:// or file:// address"),
    (["GOOD", "GOOD"], "registered the weights 'my_net.imagenet' twice"),
])
def test_a_plugin_registering_bad_weights_fails_alone(make_plugin, no_builtins, registered, message):
    body = ("GOOD = WeightsEntry(name='my_net.imagenet', url='https://example.org/my_net-1a2b3c4d.pth', "
            "sha256='1a2b3c4d', backbone='my_net', head='classifier', num_classes=10)\n"
            "def _bad():\n"
            "    return WeightsEntry(name='my_net.imagenet', url='http://example.org/my_net-1a2b3c4d.pth', "
            "sha256='1a2b3c4d', backbone='my_net', head='classifier', num_classes=10)\n")
    source = _weights_plugin(*registered, body=body)
    source += "\n@hookimpl\ndef vertebra_register_backbones(register):\n    register('half_net', lambda: None)\n"
    make_plugin(source, ep="sloppy")
    make_plugin(_weights_plugin(), ep="fine")
    with pytest.warns(PluginWarning, match="'sloppy'") as record:
        assert registry.list_weights() == []
    assert message in str(record[0].message)
    assert registry.list_backbones() == []  # nothing from the failed plugin, not even its backbone
    assert {p.name: p.status for p in registry.plugins()} == {"vertebra": "disabled", "sloppy": "failed",
                                                              "fine": "loaded"}
    with pytest.raises(UnknownNameError, match="plugin\\(s\\) sloppy failed to load"):
        get_weights_entry("my_net.imagenet")


@pytest.mark.parametrize("field, value, message", [
    ("name", "MyNet.imagenet", "the name must be '<architecture>.<dataset>'"),
    ("name", "my_net", "the name must be '<architecture>.<dataset>'"),
    ("url", "http://example.org/w-1a2b3c4d.pth", "url must be an https:// or file:// address"),
    ("url", "https://example.org/", "url must be an https:// or file:// address"),
    ("sha256", "1a2b3c", "sha256 must be 8 to 64 lower-case hex digits"),
    ("sha256", "XYZ12345", "sha256 must be 8 to 64 lower-case hex digits"),
    ("backbone", "", "backbone must name a registered backbone"),
    ("num_classes", 0, "num_classes must be a positive integer"),
    ("num_classes", True, "num_classes must be a positive integer"),
    ("backbone_kwargs", [("width_mult", 0.75)], "backbone_kwargs must map backbone option names"),
    ("backbone_kwargs", {"name": "other_net"}, "backbone_kwargs must map backbone option names"),
])
def test_weights_entry_refuses_what_could_never_be_fetched_or_checked(field, value, message):
    fields = dict(name="my_net.imagenet", url="https://example.org/my_net-1a2b3c4d.pth", sha256="1a2b3c4d",
                  backbone="my_net", head="classifier", num_classes=10)
    WeightsEntry(**fields)  # the valid baseline
    with pytest.raises(ConfigError, match=f"^{field}: weights entry .*{message}"):
        WeightsEntry(**(fields | {field: value}))
