"""Lazy factory references: listing imports no family module (no torch); everything else resolves on use."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings

import pytest

from vertebra import registry
from vertebra.errors import PluginError
from vertebra.plugins import LazyFactory, PluginWarning, lazy
from vertebra.plugins._lazy import find_module_spec, module_exports
from vertebra.plugins.builtin import BACKBONE_MODULES, HEAD_MODULES
from vertebra.plugins.testing import mounted, write_distribution
from vertebra.registry._kwargs import signature_of

LIST_PROBE = """
import json, sys
from vertebra import registry
counts = [len(registry.list_backbones()), len(registry.list_heads())]
after_registry = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))
import vertebra.cli
status = vertebra.cli.main(["list"])
families = sorted(m for m in sys.modules if m.startswith(('vertebra.backbones.', 'vertebra.heads.')))
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'segmentation_models_pytorch'))
print(json.dumps({"counts": counts, "after_registry": after_registry, "status": status,
                  "families": families, "heavy": heavy}))
"""


def test_listing_the_builtin_families_imports_no_torch():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERTEBRA_")}
    done = subprocess.run([sys.executable, "-c", LIST_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "efficientnet_b0" in done.stdout and "mobilenet_v3_large" in done.stdout  # the table was printed
    assert result["counts"][0] >= 12 and result["counts"][1] >= 8 and result["status"] == 0
    assert result["after_registry"] == [] and result["heavy"] == []
    assert result["families"] == []  # no family module (nor vertebra.backbones._base) was imported


def _builtin_entries():
    return [(kind, name) for kind, lister in (("backbone", registry.list_backbones), ("head", registry.list_heads))
            for name in lister() if registry.entry(kind, name).plugin == "vertebra"]


def test_every_builtin_entry_is_lazy_and_matches_the_real_function():
    from importlib import import_module

    from vertebra.heads._base import requirements_of

    entries = _builtin_entries()
    assert len(entries) >= 20
    exported = {name: module for module in BACKBONE_MODULES + HEAD_MODULES for name in import_module(module).__all__}
    assert sorted(exported) == sorted(name for _, name in entries)  # __all__ is still the one source of truth
    for kind, name in entries:
        factory = registry.entry(kind, name).factory
        real = getattr(import_module(exported[name]), name)
        assert isinstance(factory, LazyFactory) and factory.reference == f"{exported[name]}:{name}"
        assert inspect.signature(factory) == inspect.signature(real)
        assert factory.__doc__ == real.__doc__ and inspect.getdoc(factory) == inspect.getdoc(real)
        assert factory.resolve() is real and factory.__wrapped__ is real
        if kind == "head":
            assert requirements_of(factory) == requirements_of(real)  # @requires' attribute is forwarded


def test_summaries_read_from_source_equal_the_real_docstrings_first_lines():
    from importlib import import_module

    for module in BACKBONE_MODULES + HEAD_MODULES:
        for name in module_exports(module):
            fresh = lazy(f"{module}:{name}")  # unresolved: the summary comes from ast
            real_doc = inspect.getdoc(getattr(import_module(module), name))
            assert real_doc, f"{module}:{name} has no docstring"
            assert fresh.summary == real_doc.splitlines()[0].strip()
            assert fresh._target is None  # reading the summary did not resolve it
        assert module_exports(module) == tuple(import_module(module).__all__)


def test_calling_a_lazy_builtin_builds_what_the_real_factory_builds():
    import torch

    from vertebra.backbones.mobilenetv3 import mobilenet_v3_small

    with torch.device("meta"):
        ours = lazy("vertebra.backbones.mobilenetv3:mobilenet_v3_small")(output_stride=16)
        real = mobilenet_v3_small(output_stride=16)
    assert type(ours) is type(real)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in real.state_dict().items()]
    assert list(ours.feature_info) == list(real.feature_info)


TARGET = '''
"""A plugin's heavy module (imagine it imports torch)."""

IMPORTED = True


def fancy_net(*, depth: int = 3, width: float = 1.0) -> dict:
    """A fancy network.

    Details the summary leaves out.
    """
    return {"depth": depth, "width": width}


def _helper():
    pass


undocumented = _helper
'''

BROKEN_TARGET = 'raise RuntimeError("the heavy module is broken")\n'


def _lazy_plugin(refs: dict[str, str]) -> str:
    lines = ["from vertebra.plugins import hookimpl, lazy", "", "@hookimpl",
             "def vertebra_register_backbones(register):"]
    lines += [f"    register({name!r}, lazy({ref!r}))" for name, ref in refs.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def lazy_plugin(tmp_path, monkeypatch):
    """``lazy_plugin(refs, ep)`` installs a plugin registering ``lazy(ref)`` per name, next to target modules."""
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")
    roots = []

    def make(refs, ep="lazyplug"):
        root = write_distribution(tmp_path / ep, f"{ep}-dist", "1.0", {ep: f"{ep}_plugin"},
                                  {f"{ep}_plugin": _lazy_plugin(refs), f"{ep}_pkg.heavy": TARGET,
                                   f"{ep}_pkg.broken": BROKEN_TARGET})
        # The package's __init__ must not run either while listing (a real one may import torch).
        (root / f"{ep}_pkg" / "__init__.py").write_text("raise RuntimeError('package __init__ imported')\n")
        roots.append(root)
        return root

    yield make
    for module in [m for m in sys.modules if m.startswith(("lazyplug", "other"))]:
        del sys.modules[module]


def test_a_third_party_lazy_factory_lists_without_import_and_calls_through(lazy_plugin):
    root = lazy_plugin({"fancy_net": "lazyplug_pkg.heavy:fancy_net", "plain_net": "lazyplug_pkg.heavy:undocumented"})
    with mounted(root):
        assert registry.list_backbones() == ["fancy_net", "plain_net"]
        factory = registry.entry("backbone", "fancy_net").factory
        assert factory.summary == "A fancy network."
        assert registry.entry("backbone", "plain_net").factory.summary == ""  # not a def: nothing to read
        assert "lazyplug_pkg" not in sys.modules and "lazyplug_pkg.heavy" not in sys.modules
        # Resolution imports the real package (here its __init__ raises): a clear error at first use.
        with pytest.raises(PluginError, match="plugin 'lazyplug': lazy factory 'lazyplug_pkg.heavy:fancy_net'"
                                              ".*package __init__ imported"):
            factory(depth=1)
        (root / "lazyplug_pkg" / "__init__.py").write_text("")
        assert factory(depth=5) == {"depth": 5, "width": 1.0}
        assert str(inspect.signature(factory)) == "(*, depth: int = 3, width: float = 1.0) -> dict"
        assert factory.__doc__.startswith("A fancy network.") and factory.__name__ == "fancy_net"
        assert signature_of(factory).params == {"depth": 3, "width": 1.0}  # what build() checks kwargs against


def test_a_lazy_reference_to_a_missing_module_fails_its_plugin_at_discovery(lazy_plugin):
    bad = lazy_plugin({"ghost_net": "lazyplug_pkg.no_such_module:ghost_net"})
    good = write_distribution(bad.parent / "other", "other-dist", "1.0", {"other": "other_plugin"},
                              {"other_plugin": _lazy_plugin({"fine_net": "other_pkg.heavy:fancy_net"}),
                               "other_pkg.heavy": TARGET})
    with mounted(bad, good):
        with pytest.warns(PluginWarning, match="'lazyplug'.*module 'lazyplug_pkg.no_such_module' not found"):
            assert registry.list_backbones() == ["fine_net"]  # isolated: the other plugin still loads
        status = {p.name: p.status for p in registry.plugins()}
        assert (status["lazyplug"], status["other"]) == ("failed", "loaded")


def test_a_lazy_reference_to_a_missing_attribute_fails_at_first_use(lazy_plugin):
    root = lazy_plugin({"typo_net": "lazyplug_pkg.heavy:fancy_nett", "broken_net": "lazyplug_pkg.broken:net"})
    (root / "lazyplug_pkg" / "__init__.py").write_text("")
    with mounted(root):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # discovery is clean: the modules exist
            assert registry.list_backbones() == ["broken_net", "typo_net"]
        with pytest.raises(PluginError, match="plugin 'lazyplug': lazy factory 'lazyplug_pkg.heavy:fancy_nett': "
                                              "module lazyplug_pkg.heavy has no attribute 'fancy_nett'"):
            registry.build_backbone("typo_net")
        with pytest.raises(PluginError, match="importing lazyplug_pkg.broken failed: RuntimeError: the heavy"):
            registry.describe("broken_net")


def test_strict_mode_makes_a_missing_lazy_module_an_error(lazy_plugin, monkeypatch):
    root = lazy_plugin({"ghost_net": "nowhere_at_all_xyz:ghost_net"})
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "1")
    with mounted(root), pytest.raises(PluginError, match="module 'nowhere_at_all_xyz' not found"):
        registry.list_backbones()


@pytest.mark.parametrize("reference", ["no_colon", "pkg.mod:", ":attr", "pkg..mod:f", "pkg.mod:a.b", "pkg.mod:1x", 42])
def test_malformed_references_are_refused(reference):
    with pytest.raises(PluginError, match="must look like 'package.module:function'"):
        lazy(reference)


def test_module_exports_needs_a_literal_all(tmp_path):
    (tmp_path / "vfake_exports_ok.py").write_text("__all__ = ['a', 'b']\ndef a(): pass\ndef b(): pass\n")
    (tmp_path / "vfake_exports_bad.py").write_text("__all__ = ['a'] + ['b']\n")
    (tmp_path / "vfake_exports_none.py").write_text("x = 1\n")
    with mounted(tmp_path):
        assert module_exports("vfake_exports_ok") == ("a", "b")
        for name in ("vfake_exports_bad", "vfake_exports_none"):
            with pytest.raises(PluginError, match="literal list or tuple of strings"):
                module_exports(name)
        with pytest.raises(ModuleNotFoundError) as info:
            module_exports("vfake_exports_missing")
        assert info.value.name == "vfake_exports_missing"
        assert not [m for m in sys.modules if m.startswith("vfake_exports")]


def test_find_module_spec_imports_no_parent_package(tmp_path):
    package = tmp_path / "vfake_parent_pkg" / "inner"
    package.mkdir(parents=True)
    (tmp_path / "vfake_parent_pkg" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "leaf.py").write_text("def f():\n    '''Leaf.'''\n")
    with mounted(tmp_path):
        spec = find_module_spec("vfake_parent_pkg.inner.leaf")
        assert spec is not None and spec.origin == str(package / "leaf.py")
        assert find_module_spec("vfake_parent_pkg.inner.nope") is None
        assert lazy("vfake_parent_pkg.inner.leaf:f").summary == "Leaf."
        assert not [m for m in sys.modules if m.startswith("vfake_parent_pkg")]
