"""A head's requirements are declared once and checked once, with one message per rule.

The rule (``Requirements``) lives with the head; the check (``heads._base.requirements_problem``)
is the only code that raises for it, whether the head is reached through the registry (checked on
``meta``, then the builder runs unchecked) or by calling the builder directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from heads_helpers import HEADS
from vertebra import registry
from vertebra.errors import IncompatibleError
from vertebra.heads import Requirements, _base, segmentation, smp_decoders

HEADS_DIR = Path(_base.__file__).parent


def _message(call) -> str:
    with pytest.raises(IncompatibleError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("builder, backbone, head_kwargs", [
    (segmentation.lraspp, {"output_stride": 16, "out_indices": [3, 4]}, {}),     # no stride-8 level
    (segmentation.lraspp, {"output_stride": 16, "out_indices": [0, 1]}, {}),  # deepest at 4, not 8 or 16
    (segmentation.deeplabv3, {"output_stride": 16, "out_indices": [4]}, {"aux_loss": True}),
    (smp_decoders.deeplabv3plus, {"output_stride": 16, "out_indices": [2, 3, 4]}, {}),
    (smp_decoders.upernet, {"out_indices": [3, 4]}, {}),
])
def test_one_rule_one_message_through_registry_or_builder(builder, backbone, head_kwargs):
    head = builder.__name__
    through_registry = _message(lambda: registry.build(head, backbone={"name": "mobilenet_v3_small", **backbone},
                                                       **head_kwargs))
    real = registry.build_backbone("mobilenet_v3_small", **backbone)
    assert _message(lambda: builder(real, **head_kwargs)) == through_registry
    assert through_registry.startswith(f"head {head!r} on backbone 'mobilenet_v3_small': the head ")


def test_builder_called_directly_names_the_rule_and_the_keyword():
    from vertebra.backbones.mobilenetv3 import mobilenet_v3_small

    message = _message(lambda: segmentation.lraspp(mobilenet_v3_small()))
    assert message.startswith("head 'lraspp' on a Backbone: the head needs the deepest level at stride 8 or 16")
    assert message.endswith("build the backbone with output_stride=8 or 16 (or leave it unset: registry.build "
                            "then picks 16)")


def test_the_registry_checks_once_and_the_builder_not_again(monkeypatch):
    calls = []
    check = _base.requirements_problem

    def counting(*args, **kwargs):
        calls.append(kwargs["head"])
        return check(*args, **kwargs)

    monkeypatch.setattr(_base, "requirements_problem", counting)
    registry.build("lraspp", backbone="mobilenet_v3_small")
    assert calls == ["lraspp"]  # on meta, by the registry; the builder ran unchecked
    segmentation.lraspp(registry.build_backbone("mobilenet_v3_small", output_stride=16))
    assert calls == ["lraspp", "lraspp"]  # a direct call runs the same check, once


@pytest.mark.parametrize("head", HEADS)
def test_registered_heads_declare_requirements_and_keep_their_signature(head):
    import inspect

    factory = registry.entry("head", head).factory
    real = factory.resolve()
    assert isinstance(_base.requirements_of(real), Requirements)
    assert inspect.signature(real) == inspect.signature(real.vertebra_unchecked)
    assert real.__doc__ == real.vertebra_unchecked.__doc__


def test_no_head_module_raises_incompatible_error_itself():
    """Only the one check raises for a contract rule, so a rule cannot fail with two messages."""
    for path in sorted(HEADS_DIR.glob("*.py")):
        if path.name == "_base.py":
            continue
        names = {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)}
        assert "IncompatibleError" not in names, path.name


def test_heads_import_the_contract_never_a_backbone_module():
    for path in sorted(HEADS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = ("." * node.level) + (node.module or "")
                assert not module.startswith("..backbones") and "vertebra.backbones" not in module, path.name
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("vertebra.backbones") for alias in node.names), path.name


def test_requirements_read_in_vertebra_info():
    needs = registry.describe("lraspp").requirements.needs()
    assert needs == ["output_stride=16 unless the backbone sets it", "deepest level at stride 8 or 16",
                     "stride(s) 8", "at least 2 level(s)"]
    assert "deepest level at stride 16 or 32" in registry.describe("upernet").requirements.needs()


def test_named_levels_are_a_requirement():
    requirements = _base.requirements_of(registry.entry("head", "fasterrcnn_fpn").factory, levels=["C5", "C4"])
    assert requirements.names == ("C5", "C4") and requirements.min_levels == 2
    with torch.device("meta"):
        backbone = registry.build_backbone("mobilenet_v3_small", out_indices=[0, 1, 2])
    problem = _base.requirements_problem(requirements, backbone, head="fasterrcnn_fpn")
    assert "reads level(s) 'C5', 'C4'" in problem and "include them in backbone.out_indices" in problem


@pytest.mark.parametrize("head, option", [("lraspp", {"preset": "tv"}), ("fasterrcnn_fpn", {"levels": ["C4", "C4"]})])
def test_options_the_requirements_validate_keep_the_config_path(head, option):
    from vertebra.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": head, "backbone": "mobilenet_v3_small", **option}, path="model")
    assert info.value.path == f"model.{next(iter(option))}"
