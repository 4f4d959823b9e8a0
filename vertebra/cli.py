"""The ``vertebra`` command line: a table of subcommands, each a module imported only when it runs.

A subcommand is a module (or a ``module:attribute`` object) exposing::

    def configure(parser: argparse.ArgumentParser) -> None: ...   # add its arguments
    def run(args: argparse.Namespace) -> int: ...                  # do the work, return the exit code

Adding one is a row in :data:`COMMANDS`; ``vertebra --help`` lists every row without importing any of
them, which keeps it instant.  A :class:`~vertebra.errors.VertebraError` becomes one ``error: ...``
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib import import_module
from pathlib import Path
from typing import Any, NamedTuple, Sequence

__all__ = ["COMMANDS", "Command", "main", "BenchFromCheckout"]


class Command(NamedTuple):
    """Where a subcommand lives and its one-line help (shown by ``vertebra --help``)."""

    target: str
    help: str


COMMANDS: dict[str, Command] = {
    "list": Command("vertebra.registry._cli:list_command", "list registered backbones, heads and named weights"),
    "info": Command("vertebra.registry._cli:info_command",
                    "describe a backbone, head or named weights: arguments, feature levels, parameters, source"),
    "plugins": Command("vertebra.registry._cli:plugins_command",
                       "show every plugin: distribution, version, status (loaded/failed/disabled)"),
    "data": Command("vertebra.data._cli", "data set tools ('vertebra data shapes' writes the built-in set)"),
    "train": Command("vertebra.engine._cli_train", "train a model from a YAML config"),
    "eval": Command("vertebra.engine._cli_eval", "evaluate a checkpoint on a config's validation data"),
    "predict": Command("vertebra.deploy._cli_predict",
                       "predict with a trained model artifact on image files: results, overlays, summary"),
    "export": Command("vertebra.deploy._cli_export",
                      "export a model artifact to ONNX, OpenVINO or pt2 (detectors included), with a JSON sidecar"),
    "quantize": Command("vertebra.quantization._cli",
                        "post-training int8 of a model artifact, calibrated on images (an int8 artifact)"),
    "quickstart": Command("vertebra.engine._quickstart",
                          "generate data, then train and evaluate a small detector and segmenter"),
    "bench": Command("vertebra.cli:BenchFromCheckout",
                     "run the benchmarks and compare them with a baseline (from a source checkout)"),
}

EXIT_ERROR = 2


def _version() -> str:
    from .version import __version__

    return __version__


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="vertebra", description="Any vision backbone under any head: registry, training, benchmarks.",
        epilog="Run 'vertebra COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"vertebra {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {name: sub.add_parser(name, help=command.help, description=command.help)
               for name, command in COMMANDS.items()}
    return parser, parsers


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first token that is not an option of ``vertebra`` itself."""
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def _load(name: str) -> Any:
    """The module (or object) behind a subcommand; a clear VertebraError when it is not installed."""
    from .errors import VertebraError

    module_name, _, attribute = COMMANDS[name].target.partition(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise VertebraError(f"the {name!r} command is not available in this installation "
                                f"(module {module_name} is missing)") from exc
        raise
    handler = getattr(module, attribute) if attribute else module
    for hook in ("configure", "run"):
        if not callable(getattr(handler, hook, None)):
            raise VertebraError(f"the {name!r} command ({COMMANDS[name].target}) has no {hook}() function")
    return handler


def checkout_benchmarks() -> Path:
    """The ``benchmarks/`` folder of a vertebra source checkout: ``./benchmarks``, else the one beside
    the imported package (an editable install of a checkout).  A wheel ships no benchmarks."""
    from .errors import VertebraError

    roots = [Path.cwd(), Path(__file__).resolve().parent.parent]
    for root in roots:
        if (root / "benchmarks" / "_bench_cli.py").is_file():
            return root / "benchmarks"
    raise VertebraError("'vertebra bench' runs the benchmark suite of a source checkout and found none "
                        f"(no benchmarks/_bench_cli.py under {' or '.join(repr(str(r)) for r in roots)}); "
                        "run it from a vertebra checkout (git clone, then pip install -e .)")


class BenchFromCheckout:
    """``vertebra bench``: its code lives with the suite it runs (``benchmarks/_bench_cli.py``), so
    the installed package carries no tooling that works only in a checkout; this loads it from there."""

    @staticmethod
    def _tool() -> Any:
        folder = str(checkout_benchmarks())
        if folder not in sys.path:  # the suite's modules import each other by bare name
            sys.path.insert(0, folder)
        return import_module("_bench_cli")

    @staticmethod
    def configure(parser: argparse.ArgumentParser) -> None:
        BenchFromCheckout._tool().configure(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return BenchFromCheckout._tool().run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vertebra`` script and of ``python -m vertebra``; returns the exit status."""
    from .errors import VertebraError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = _parser()
    name = _chosen(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            handler = None
            if name in COMMANDS:
                handler = _load(name)
                handler.configure(parsers[name])
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
            return int(handler.run(args) or 0)
        except VertebraError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `vertebra list | head`: stop quietly, like other Unix tools
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """vertebra's own warnings as one ``warning: ...`` line; others in Python's usual format."""
    from .plugins import PluginWarning

    stream = sys.stderr if file is None else file
    if issubclass(category, PluginWarning):
        print(f"warning: {message}", file=stream)
    else:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
