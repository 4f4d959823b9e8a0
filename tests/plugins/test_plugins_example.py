"""The example third-party plugin (examples/vertebra-plugin-example) mounted as a real entry point.

Its dist-info is written to a temporary folder from the example's own pyproject.toml, so these tests
exercise exactly what ``pip install ./examples/vertebra-plugin-example`` declares.  The tests under
built-in heads (classifier, lraspp) need the built-in head modules.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch

from vertebra import registry
from vertebra.plugins.testing import mounted, write_distribution

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vertebra-plugin-example"


@pytest.fixture
def example(tmp_path):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    root = write_distribution(tmp_path, project["name"], project["version"],
                              project["entry-points"]["vertebra"])
    with mounted(root, EXAMPLE / "src"):
        yield project


def test_example_is_discovered_listed_and_described(example):
    info = next(p for p in registry.plugins() if p.name == "example")
    assert (info.status, info.distribution, info.version) == ("loaded", "vertebra-plugin-example", "0.1.0")
    assert info.backbones == ("tiny_convnet",)
    assert registry.list_backbones("tiny*") == ["tiny_convnet"]
    d = registry.describe("tiny_convnet")
    assert (d.plugin, d.qualified_name, d.distribution) == ("example", "example:tiny_convnet",
                                                             "vertebra-plugin-example")
    assert d.summary.startswith("A tiny 5-level conv net")
    assert [(s.name, s.channels, s.stride) for s in d.levels] == [
        ("C1", 8, 2), ("C2", 16, 4), ("C3", 32, 8), ("C4", 64, 16), ("C5", 128, 32)]
    assert d.params == sum(p.numel() for p in registry.build_backbone("tiny_convnet").parameters())
    assert d.kwargs["output_stride"] == 32 and d.input_size == 64


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_example_backbone_honours_the_feature_contract(example, output_stride):
    backbone = registry.build_backbone("example:tiny_convnet", output_stride=output_stride, width=4).eval()
    torch.manual_seed(0)
    out = backbone(torch.randn(2, 3, 67, 45))
    assert list(out) == backbone.feature_info.names()
    for spec, tensor in zip(backbone.feature_info, out.values()):
        assert spec.stride == min(2 ** (int(spec.name[1])), output_stride)
        assert tensor.shape == (2, spec.channels, math.ceil(67 / spec.stride), math.ceil(45 / spec.stride))


def test_example_under_the_builtin_classifier(example):
    model = registry.build("classifier", backbone={"name": "tiny_convnet", "width": 4}, num_classes=7)
    logits = model.eval()(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    again = registry.build_from_config(model.config)
    again.load_state_dict(model.state_dict(), strict=True)


def test_example_under_lraspp_gets_output_stride_16(example):
    assert "tiny_convnet" in registry.compatible("lraspp")
    model = registry.build("lraspp", backbone="tiny_convnet", num_classes=3)
    assert model.config["backbone"] == {"name": "tiny_convnet"}
    assert max(s.stride for s in model.backbone.feature_info) == 16
    out = model.eval()(torch.randn(1, 3, 64, 96))
    assert out["out"].shape == (1, 3, 64, 96)


def test_example_backbone_validates_its_own_arguments(example):
    from vertebra.errors import ConfigError

    with pytest.raises(ConfigError, match="^width: width must be a positive integer"):
        registry.build_backbone("tiny_convnet", width=0)
    with pytest.raises(ConfigError, match="^backbone.width:"):
        registry.build("classifier", backbone={"name": "tiny_convnet", "width": -1})


def test_example_passes_the_conformance_kit_under_every_compatible_head(example):
    from vertebra.plugins.testing import check_backbone

    report = check_backbone("example:tiny_convnet", kwargs={"width": 4}, sizes=((67, 45),))
    assert report.passed == ["contract", "output_stride", "out_indices", "meta", "state_dict", "freeze",
                             "checkpointing", "heads", "export"]
    assert not [r for r in report.refused if not r.startswith("head ")]  # only heads that do not fit it
    assert {r.split(":")[0] for r in report.refused} <= {"head deeplabv3plus", "head upernet", "head pan"}
    assert all("input rule" in r for r in report.refused if r.startswith("head pan:"))  # 128 px at least
