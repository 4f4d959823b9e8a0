"""Isolation: a plugin that fails anywhere is reported, leaves nothing registered, and harms no other plugin."""

from __future__ import annotations

import pytest

from plugin_fakes import plugin_source
from vertebra import registry
from vertebra.errors import PluginError, UnknownNameError
from vertebra.plugins import PluginWarning, hookimpl


def _status(name):
    return next(p for p in registry.plugins() if p.name == name)


def _load_with_warning(match):
    with pytest.warns(PluginWarning, match=match) as record:
        registry.list_backbones()
    return str(record[0].message)


def test_import_failure_is_reported_and_others_still_load(make_plugin, no_builtins):
    make_plugin(plugin_source(backbones=["good_net"]), ep="good")
    make_plugin("import vertebra_no_such_module_xyz\n", ep="broken", dist="broken-dist", version="0.9")
    message = _load_with_warning("'broken'")
    for part in ("broken-dist 0.9", "failed to import",
                 "ModuleNotFoundError: No module named 'vertebra_no_such_module_xyz'",
                 "VERTEBRA_DISABLE_PLUGINS=broken"):
        assert part in message
    assert "entry point broken = vfake_" in message  # names the entry point
    assert registry.list_backbones() == ["good_net"]
    info = _status("broken")
    assert info.status == "failed" and "ModuleNotFoundError" in info.detail
    assert _status("good").status == "loaded"


RAISING_HOOK = """
from vertebra.plugins import hookimpl

def half(**kwargs):
    '''Registered just before the hook fails.'''

@hookimpl
def vertebra_register_backbones(register):
    register("half_done", half)
    raise RuntimeError("boom in the hook")
"""

RAISING_HEADS_HOOK = """
from vertebra.plugins import hookimpl

def net(**kwargs):
    '''A backbone from a plugin whose heads hook fails.'''

@hookimpl
def vertebra_register_backbones(register):
    register("early_net", net)

@hookimpl
def vertebra_register_heads(register):
    raise ValueError("heads are broken")
"""


def test_raising_hook_leaves_nothing_registered(make_plugin, no_builtins):
    make_plugin(RAISING_HOOK, ep="raiser", dist="raiser-dist")
    make_plugin(plugin_source(backbones=["good_net"]), ep="good")
    message = _load_with_warning("'raiser'")
    assert "raised in its vertebra_register_backbones hook: RuntimeError: boom in the hook" in message
    assert registry.list_backbones() == ["good_net"]
    with pytest.raises(UnknownNameError, match="plugin\\(s\\) raiser failed to load"):
        registry.build_backbone("half_done")
    assert registry._get_catalog().loader.manager.get_plugin("raiser") is None  # unregistered from pluggy


def test_failure_in_a_later_hook_discards_the_earlier_hooks_entries(make_plugin, no_builtins):
    make_plugin(RAISING_HEADS_HOOK, ep="halfway")
    message = _load_with_warning("'halfway'")
    assert "vertebra_register_heads hook: ValueError: heads are broken" in message
    assert registry.list_backbones() == [] and _status("halfway").backbones == ()


INVALID_HOOK_NAME = """
from vertebra.plugins import hookimpl

@hookimpl
def vertebra_register_backbone(register):  # typo: missing 's'
    pass
"""

INVALID_HOOK_ARGS = """
from vertebra.plugins import hookimpl

@hookimpl
def vertebra_register_backbones(registrar):
    pass
"""


@pytest.mark.parametrize("source, cause", [(INVALID_HOOK_NAME, "vertebra_register_backbone"),
                                           (INVALID_HOOK_ARGS, "registrar")])
def test_hooks_that_do_not_match_the_specs_are_refused(make_plugin, no_builtins, source, cause):
    make_plugin(source, ep="misfit")
    message = _load_with_warning("'misfit'")
    assert "is not a valid vertebra plugin" in message and cause in message
    assert _status("misfit").status == "failed"


def _garbage(call):
    return f"""
from vertebra.plugins import hookimpl

def net(**kwargs):
    '''A fine factory.'''

@hookimpl
def vertebra_register_backbones(register):
    register("fine_net", net)
    {call}
"""


@pytest.mark.parametrize("call, expected", [
    ("register('Bad-Name', net)", "'Bad-Name'; names must be lower-case identifiers"),
    ("register('', net)", "name ''; names must be lower-case"),
    ("register(42, net)", "name 42; names must be lower-case"),
    ("register('1net', net)", "'1net'; names must be"),
    ("register('not_callable', 42)", "registered backbone 'not_callable' as a int"),
    ("register('fine_net', net)", "registered the backbone 'fine_net' twice"),
])
def test_garbage_registrations_fail_the_whole_plugin(make_plugin, no_builtins, call, expected):
    make_plugin(_garbage(call), ep="garbage")
    message = _load_with_warning("'garbage'")
    assert "PluginError" in message and expected in message
    assert registry.list_backbones() == []  # not even the fine entry registered before the garbage


def test_a_plugin_without_any_hook_loads_with_nothing(make_plugin, no_builtins):
    make_plugin("VALUE = 1\n", ep="empty")
    assert registry.list_backbones() == []
    assert _status("empty").status == "loaded"


def test_register_plugin_at_run_time_raises_instead_of_warning(no_builtins):
    class Bad:
        @hookimpl
        def vertebra_register_backbones(self, register):
            register("Bad Name", print)

    with pytest.raises(PluginError, match="'Bad Name'"):
        registry.register_plugin(Bad(), "bad")
    assert [p.name for p in registry.plugins()] == ["vertebra"]

    class Good:
        @hookimpl
        def vertebra_register_backbones(self, register):
            register("runtime_net", print)

    info = registry.register_plugin(Good(), "good")
    assert info.status == "loaded" and info.backbones == ("runtime_net",)
    with pytest.raises(PluginError, match="already took"):
        registry.register_plugin(Good(), "good")
