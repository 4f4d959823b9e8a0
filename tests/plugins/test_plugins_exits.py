"""A plugin cannot end the program through discovery: ``SystemExit`` and a ``KeyboardInterrupt``
raised by plugin code fail that plugin only; a real Ctrl-C (SIGINT) still stops the program."""

from __future__ import annotations

import pytest

from plugin_fakes import plugin_source
from vertebra import registry
from vertebra.errors import PluginError
from vertebra.plugins import PluginWarning, lazy

EXIT_AT_IMPORT = "import sys\nsys.exit(3)\n"
INTERRUPT_AT_IMPORT = "raise KeyboardInterrupt\n"
EXIT_IN_HOOK = """
from vertebra.plugins import hookimpl

@hookimpl
def vertebra_register_heads(register):
    raise SystemExit("bye from the hook")
"""
INTERRUPT_IN_HOOK = EXIT_IN_HOOK.replace('SystemExit("bye from the hook")', "KeyboardInterrupt()")
# A real SIGINT arriving while the plugin imports: the default handler raises KeyboardInterrupt in it.
REAL_CTRL_C = """
import os, signal, time
os.kill(os.getpid(), signal.SIGINT)
for _ in range(1000):
    time.sleep(0.01)
"""


def _status(name):
    return next(p for p in registry.plugins() if p.name == name)


@pytest.mark.parametrize("source, ep, what, cause", [
    (EXIT_AT_IMPORT, "exits", "failed to import", "SystemExit: 3"),
    (INTERRUPT_AT_IMPORT, "interrupts", "failed to import", "KeyboardInterrupt"),
    (EXIT_IN_HOOK, "exits_hook", "raised in its vertebra_register_heads hook", "SystemExit: bye from the hook"),
    (INTERRUPT_IN_HOOK, "interrupts_hook", "raised in its vertebra_register_heads hook", "KeyboardInterrupt"),
])
def test_exit_or_interrupt_from_plugin_code_fails_only_that_plugin(make_plugin, no_builtins, source, ep, what,
                                                                   cause):
    make_plugin(plugin_source(backbones=["good_net"]), ep="good")
    make_plugin(source, ep=ep, dist=f"{ep}-dist", version="2.0")
    with pytest.warns(PluginWarning, match=f"'{ep}'") as record:
        assert registry.list_backbones() == ["good_net"]  # discovery finished; the others loaded
    message = str(record[0].message)
    assert f"{ep}-dist 2.0" in message and what in message and cause in message
    assert "may not end the program" in message
    info = _status(ep)
    assert info.status == "failed" and cause in info.detail


def test_exit_from_plugin_code_is_a_plugin_error_in_strict_mode(make_plugin, no_builtins, monkeypatch):
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "1")
    make_plugin(EXIT_AT_IMPORT, ep="exits")
    with pytest.raises(PluginError, match="'exits'.*failed to import: SystemExit: 3"):
        registry.list_backbones()


def test_a_real_ctrl_c_during_discovery_still_stops_the_program(make_plugin, no_builtins, default_sigint):
    make_plugin(REAL_CTRL_C, ep="slow")
    with pytest.raises(KeyboardInterrupt):
        registry.list_backbones()


def test_a_lazy_factory_module_that_exits_at_import_fails_the_build_with_a_plugin_error(tmp_path, no_builtins):
    from vertebra.plugins import hookimpl
    from vertebra.plugins.testing import mounted

    (tmp_path / "vfake_exiting_family.py").write_text("raise SystemExit(4)\ndef net(): pass\n")

    class Plugin:
        @hookimpl
        def vertebra_register_backbones(self, register):
            register("exiting_net", lazy("vfake_exiting_family:net"))

    with mounted(tmp_path):
        registry.register_plugin(Plugin(), "exiting")
        with pytest.raises(PluginError, match="'exiting'.*importing vfake_exiting_family failed: SystemExit: 4"):
            registry.build_backbone("exiting_net")
