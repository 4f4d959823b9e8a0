"""The ``vertebra`` CLI core: the lazy command table, list/info/plugins, and error exits (in-process + one subprocess)."""

from __future__ import annotations

from vertebra.text import format_table

import json
import os
import re
import subprocess
import sys
import types

import pytest

from vertebra import cli, registry
from vertebra.plugins.testing import write_distribution

PLUGIN = '''
from vertebra.plugins import hookimpl


def tiny_cli_net(*, width: int = 4, output_stride: int = 32, out_indices=None):
    """A tiny CLI test backbone.

    More text that the summary leaves out.
    """
    from vertebra.backbones import Backbone, BackboneMeta, StridePlan
    from vertebra.features import FeatureSpec
    from torch import nn

    plan, layers, specs, channels = StridePlan(output_stride), [], [], 3
    for index in range(3):
        stride, dilation = plan.step(2)
        layers.append(nn.Conv2d(channels, width, 3, stride=stride, padding=dilation, dilation=dilation))
        channels = width
        specs.append(FeatureSpec(f"C{index + 1}", width, plan.stride, index))
    return Backbone(nn.Sequential(*layers), specs, out_indices=out_indices,
                    meta=BackboneMeta(family="tiny_cli", default_size=32))


def tiny_cli_head(backbone, *, num_classes: int = 2):
    """A tiny CLI test head."""
    return backbone


@hookimpl
def vertebra_register_backbones(register):
    register("tiny_cli_net", tiny_cli_net)


@hookimpl
def vertebra_register_heads(register):
    register("tiny_cli_head", tiny_cli_head)
'''


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """The registry with only a CLI test plugin, installed as a real entry point."""
    write_distribution(tmp_path, "cli-test-dist", "3.1", {"clitest": "vfake_cli_plugin"},
                       {"vfake_cli_plugin": PLUGIN})
    for var in ("VERTEBRA_STRICT_PLUGINS", "VERTEBRA_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._reset()
    yield tmp_path
    sys.modules.pop("vfake_cli_plugin", None)
    registry._reset()


def test_help_lists_every_command_without_importing_any(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_load", lambda name: pytest.fail(f"imported {name} for --help"))
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert name in out
    assert "list registered backbones, heads and named weights" in out


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vertebra {__import__('vertebra').__version__}"


@pytest.mark.parametrize("command", ["list", "info", "plugins"])
def test_every_registry_command_has_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert f"usage: vertebra {command}" in capsys.readouterr().out


def test_list_prints_an_aligned_table(plugin_env, capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PLUGIN", "SUMMARY"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:3] == ["tiny_cli_net", "backbone", "clitest"]
    assert lines[2].endswith("A tiny CLI test backbone.")
    assert lines[3].split()[:3] == ["tiny_cli_head", "head", "clitest"]
    column = lines[0].index("KIND")
    assert lines[2][column:].startswith("backbone") and lines[3][column:].startswith("head ")


def test_list_pattern_kind_and_json(plugin_env, capsys):
    assert cli.main(["list", "tiny*", "--kind", "head", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "tiny_cli_head", "kind": "head", "plugin": "clitest",
                     "summary": "A tiny CLI test head."}]


def test_list_without_matches_exits_1(plugin_env, capsys):
    assert cli.main(["list", "resnet*"]) == 1
    assert "no backbones, heads or weights match 'resnet*'" in capsys.readouterr().err


def test_info_shows_source_arguments_levels_and_params(plugin_env, capsys):
    assert cli.main(["info", "tiny_cli_net"]) == 0
    out = capsys.readouterr().out
    assert "clitest:tiny_cli_net" in out and "cli-test-dist 3.1" in out
    params = registry.describe("tiny_cli_net").params
    assert f"{params:,}" in out
    assert re.search(r"^output_stride +32$", out, re.M)
    level_rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 ", "2 "))]
    assert level_rows == [["0", "C1", "4", "2"], ["1", "C2", "4", "4"], ["2", "C3", "4", "8"]]


def test_info_head_lists_compatible_backbones(plugin_env, capsys):
    assert cli.main(["info", "tiny_cli_head"]) == 0
    out = capsys.readouterr().out
    assert "compatible backbones  tiny_cli_net" in out and "num_classes  2" in out


def test_info_json(plugin_env, capsys):
    assert cli.main(["info", "clitest:tiny_cli_net", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["levels"] == [{"name": "C1", "channels": 4, "stride": 2}, {"name": "C2", "channels": 4, "stride": 4},
                              {"name": "C3", "channels": 4, "stride": 8}]
    assert data["kwargs"]["width"] == "4" and data["distribution"] == "cli-test-dist"


def test_unknown_name_is_one_error_line_and_exit_2(plugin_env, capsys):
    assert cli.main(["info", "tiny_cli_nt"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: unknown backbone or head 'tiny_cli_nt'; did you mean tiny_cli_net or "
                            "tiny_cli_head?\n")
    assert captured.out == ""


def test_plugins_table_and_exit_status(plugin_env, capsys):
    assert cli.main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "BACKBONES", "HEADS", "WEIGHTS",
                                "DETAIL"]
    rows = [line.split()[:7] for line in lines[2:]]
    assert ["clitest", "cli-test-dist", "3.1", "loaded", "1", "1", "0"] in rows
    assert rows[0][:4] == ["vertebra", "vertebra", __import__("vertebra").__version__, "disabled"]


def test_plugins_exit_1_when_one_failed_and_warning_is_one_line(plugin_env, capsys, tmp_path):
    write_distribution(tmp_path / "bad", "bad-dist", "0.1", {"badone": "vfake_cli_bad"},
                       {"vfake_cli_bad": "raise RuntimeError('kaput')\n"})
    sys.path.insert(0, str(tmp_path / "bad"))
    try:
        registry._reset()
        assert cli.main(["plugins"]) == 1
    finally:
        sys.path.remove(str(tmp_path / "bad"))
    captured = capsys.readouterr()
    assert "RuntimeError: kaput" in captured.out
    assert "failed" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "'badone'" in warnings[0] and "bad-dist 0.1" in warnings[0]


def test_command_whose_module_is_missing_gives_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "ghost", cli.Command("vertebra._no_such_cli_module", "not there"))
    assert cli.main(["ghost"]) == 2
    assert capsys.readouterr().err == ("error: the 'ghost' command is not available in this installation "
                                       "(module vertebra._no_such_cli_module is missing)\n")


def test_table_driven_command_gets_configure_and_run(monkeypatch, capsys):
    from vertebra.errors import DataError

    seen = {}

    def configure(parser):
        parser.add_argument("--fail", action="store_true")

    def run(args):
        seen["args"] = args
        if args.fail:
            raise DataError("images/001.jpg cannot be decoded")
        return 0

    monkeypatch.setitem(sys.modules, "vfake_cli_command", types.SimpleNamespace(configure=configure, run=run))
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command("vfake_cli_command", "a fake command"))
    assert cli.main(["fake"]) == 0 and seen["args"].fail is False
    assert cli.main(["fake", "--fail"]) == 2
    assert capsys.readouterr().err == "error: images/001.jpg cannot be decoded\n"
    assert cli.main(["fake", "--nope"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_format_table_alignment():
    text = format_table([["a", 1], ["bbb", 22]], ["NAME", "N"], "lr")
    assert text.splitlines() == ["NAME   N", "----  --", "a      1", "bbb   22"]
    assert format_table([]) == ""


def test_real_subprocess_lists_and_fails_cleanly(plugin_env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_env), os.environ.get("PYTHONPATH", "")]),
               VERTEBRA_DISABLE_PLUGINS="vertebra")
    ok = subprocess.run([sys.executable, "-m", "vertebra", "list", "tiny*"], capture_output=True, text=True,
                        env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "tiny_cli_net" in ok.stdout and "tiny_cli_head" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "vertebra", "info", "nope_net"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown backbone or head 'nope_net'")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
