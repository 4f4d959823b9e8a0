"""The fast path attaches from outside: backbones and heads import nothing from ``vertebra.inference``,
build torchvision's plain modules, and the registry attaches the eager speed-ups to what it returns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

import vertebra
from vertebra import registry
from vertebra.backbones import Backbone
from vertebra.backbones.efficientnet import efficientnet_b0
from vertebra.backbones.mobilenetv3 import mobilenet_v3_small
from vertebra.heads.segmentation import deeplabv3
from vertebra.inference import attach_eager, inference_folding
from vertebra.inference.atrous import AtrousConv2d
from vertebra.inference.folding import FoldingConv2dNormActivation

PACKAGE = Path(vertebra.__file__).parent


def _package_of(path: Path) -> str:
    """The package a module file belongs to (``vertebra.backbones`` for ``vertebra/backbones/_base.py``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1]).removesuffix(".__init__")


def _imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, relative imports resolved, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("vertebra.inference"):  # importlib / lazy-export strings
                found.add(node.value)
    return found


@pytest.mark.parametrize("subpackage", ["backbones", "heads"])
def test_backbones_and_heads_import_nothing_from_inference(subpackage):
    files = sorted((PACKAGE / subpackage).rglob("*.py"))
    assert files
    offenders = {}
    for file in files:
        imported = _imported_modules(file.read_text("utf-8"), _package_of(file))
        bad = sorted(m for m in imported if m == "vertebra.inference" or m.startswith("vertebra.inference."))
        if bad:
            offenders[str(file.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_the_import_scan_sees_relative_and_function_level_imports():
    """So the test above can fail: ``from ..inference import x`` in a backbones module, and an import
    inside a function."""
    assert _package_of(PACKAGE / "backbones" / "_base.py") == "vertebra.backbones"
    assert _package_of(PACKAGE / "backbones" / "__init__.py") == "vertebra.backbones"
    assert "vertebra.inference.folding" in _imported_modules("from ..inference import folding\n", "vertebra.backbones")
    assert "vertebra.inference" in _imported_modules("from .. import inference\n", "vertebra.heads")
    assert "vertebra.inference" in _imported_modules("def f():\n    import vertebra.inference\n", "vertebra.heads")


def _kinds(module: nn.Module) -> tuple[int, int]:
    """(folding, plain torchvision) Conv2dNormActivation layers under ``module``."""
    return (sum(type(m) is FoldingConv2dNormActivation for m in module.modules()),
            sum(type(m) is Conv2dNormActivation for m in module.modules()))


@pytest.mark.parametrize("name, factory", [("mobilenet_v3_small", mobilenet_v3_small),
                                           ("efficientnet_b0", efficientnet_b0)])
def test_registry_backbones_fold_and_directly_built_ones_are_torchvisions(name, factory):
    direct = factory()
    folding, plain = _kinds(direct)
    assert folding == 0 and plain > 0
    built = registry.build_backbone(name)
    assert _kinds(built) == (plain, 0)
    keys = list(direct.state_dict())
    assert attach_eager(direct) is direct and _kinds(direct) == (plain, 0)
    assert list(direct.state_dict()) == keys  # a class swap: same state
    assert attach_eager(direct) is direct and _kinds(direct) == (plain, 0)  # idempotent


def test_attached_folding_runs_and_equals_the_plain_layers():
    torch.manual_seed(0)
    model = mobilenet_v3_small().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)["C5"]
        attach_eager(model)
        folded = model(x)["C5"]
        with inference_folding(False):
            assert torch.equal(model(x)["C5"], plain)  # off: bit for bit the plain layers
    assert not torch.equal(folded, plain)
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-4)


def test_heads_get_the_atrous_shortcut_only_when_attached_and_head_layers_do_not_fold():
    backbone = mobilenet_v3_small(output_stride=16)
    model = deeplabv3(backbone, num_classes=3)
    assert not any(isinstance(m, AtrousConv2d) for m in model.modules())
    attach_eager(model)
    assert sorted(m.dilation[0] for m in model.modules() if isinstance(m, AtrousConv2d)) == [12, 24, 36]
    built = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_large", num_classes=3)
    inside = {id(m) for b in built.modules() if isinstance(b, Backbone) for m in b.modules()}
    outside = [m for m in built.modules() if isinstance(m, Conv2dNormActivation) and id(m) not in inside]
    assert outside and all(type(m) is Conv2dNormActivation for m in outside)  # only backbones' layers change
    assert _kinds(next(b for b in built.modules() if isinstance(b, Backbone)))[1] == 0
