"""vertebra_register_backbone_namespaces: a prefix whose backbones are resolved on use, by any plugin."""

from __future__ import annotations

import pytest

from vertebra import registry
from vertebra.errors import PluginError, UnknownNameError

ZOO = '''
import fnmatch
from vertebra.errors import UnknownNameError
from vertebra.plugins import hookimpl

MODELS = ("alpha", "beta", "broken", "scalar")


def tiny(model, *, width: int = 4):
    """A zoo model."""
    return (model, width)


class Resolver:
    """The zoo: zoo:<model>."""
    calls = 0

    def __call__(self, name):
        Resolver.calls += 1
        if name == "broken":
            raise RuntimeError("the zoo's index is corrupt")
        if name == "scalar":
            return 42
        if name not in MODELS:
            raise UnknownNameError("zoo model", name, MODELS)
        return lambda **kwargs: tiny(name, **kwargs)

    def list_names(self, pattern):
        return [m for m in MODELS if fnmatch.fnmatchcase(m, pattern)]


resolve = Resolver()


@hookimpl
def vertebra_register_backbone_namespaces(register):
    register("zoo", resolve)


@hookimpl
def vertebra_register_backbones(register):
    register("alpha", lambda **kwargs: "the plugin's own alpha")
'''


@pytest.fixture
def zoo(make_plugin, no_builtins):
    plugin, module = make_plugin(ZOO, ep="zoo")
    import importlib

    return importlib.import_module(module)


def test_a_namespace_resolves_on_use_once_and_lists_only_when_named(zoo):
    assert registry.list_backbones() == ["alpha"]  # the zoo is not enumerated
    assert zoo.Resolver.calls == 0
    assert registry.list_backbones("zoo:*") == ["alpha", "zoo:beta", "zoo:broken", "zoo:scalar"]
    found = registry.entry("backbone", "zoo:beta")
    assert (found.name, found.qualified_name, found.plugin) == ("zoo:beta", "zoo:beta", "zoo")
    assert found.factory(width=2) == ("beta", 2)
    registry.entry("backbone", "zoo:beta")
    assert zoo.Resolver.calls == 1  # resolved once, kept until the plugins change


def test_a_plugin_entry_of_that_name_wins_over_its_namespace(zoo):
    assert registry.entry("backbone", "zoo:alpha").factory() == "the plugin's own alpha"


def test_resolver_failures_are_typed_and_name_the_plugin(zoo):
    with pytest.raises(UnknownNameError, match="alpha"):
        registry.entry("backbone", "zoo:alpah")
    with pytest.raises(PluginError, match=r"plugin 'zoo'.*zoo:broken.*index is corrupt"):
        registry.entry("backbone", "zoo:broken")
    with pytest.raises(PluginError, match="resolved 'scalar' to a int, not a backbone factory"):
        registry.entry("backbone", "zoo:scalar")
    with pytest.raises(UnknownNameError):
        registry.entry("head", "zoo:alpha")  # namespaces hold backbones only
