"""``vertebra list``, ``vertebra info`` and ``vertebra plugins``: the registry on the command line.

Each command is an object with ``configure(parser)`` and ``run(args) -> int`` (see :mod:`vertebra.cli`).
Exit status: 0 on success; 1 when ``list`` matches nothing or ``plugins`` shows a failed plugin (so
scripts and CI can rely on it); 2 for bad input (via :class:`~vertebra.errors.VertebraError`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, NamedTuple

from ..text import first_line, format_table, plural
from ..plugins._loader import TABLES

__all__ = ["list_command", "info_command", "plugins_command"]


class _Command(NamedTuple):
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _shorten(text: str | None, width: int = 72) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


# -- list -------------------------------------------------------------------------------------------
def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                        help="fnmatch pattern on the name, e.g. 'efficientnet*' or 'timm:*resnet*' (a namespace's "
                             "models are listed only when the pattern names it; quote it in the shell)")
    parser.add_argument("--kind", choices=TABLES, help="only backbones, heads or named weights")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_list(args: argparse.Namespace) -> int:
    from . import _catalog

    cat = _catalog.catalog()
    rows = []
    for kind in TABLES:
        if args.kind not in (None, kind):
            continue
        wanted = set(cat.names(kind, args.pattern))
        for entry in cat.entries(kind):
            shown = cat.display_name(entry)
            if shown in wanted:
                summary = _weights_summary(entry.factory) if kind == "weights" else _summary(entry.factory)
                rows.append({"name": shown, "kind": kind, "plugin": entry.plugin, "summary": summary})
        # A namespace (timm:, torchvision:) lists its names only for a pattern that names it.
        rows += [{"name": name, "kind": kind, "plugin": namespace.plugin, "summary": _summary(namespace.factory)}
                 for name, namespace in cat.namespace_names(kind, args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(format_table([[r["name"], r["kind"], r["plugin"], _shorten(r["summary"])] for r in rows],
                     ["NAME", "KIND", "PLUGIN", "SUMMARY"]))
    if not rows:
        what = plural(args.kind) if args.kind else "backbones, heads or weights"
        print(f"no {what} match {args.pattern!r}" if args.pattern else f"no {what} are registered",
              file=sys.stderr)
        return 1
    return 0


def _summary(func: Any) -> str:
    """The summary; a lazy factory's comes from its source, so listing imports nothing."""
    import inspect

    from ..plugins._lazy import LazyFactory

    if isinstance(func, LazyFactory):
        return func.summary
    return first_line(inspect.getdoc(func))


def _weights_summary(entry: Any) -> str:
    metrics = ", ".join(f"{key} {value:g}" for key, value in entry.metrics.items())
    options = "".join(f" {key}={value!r}" for key, value in entry.backbone_kwargs.items())
    return (f"{entry.head} on {entry.backbone}{options}, {entry.num_classes} classes"
            + (f"; {metrics}" if metrics else ""))


list_command = _Command(_configure_list, _run_list)


# -- info -------------------------------------------------------------------------------------------
def _configure_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="a backbone, head or named weights, or plugin:name")
    parser.add_argument("--kind", choices=("backbone", "head"), help="needed only if NAME is both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--no-compatible", action="store_true",
                        help="for a head, skip listing the compatible backbones (saves the meta builds)")


def _run_info(args: argparse.Namespace) -> int:
    from . import _catalog, compatible, describe

    if args.kind is None and "." in args.name:  # backbone and head names have no dot; weights names do
        return _info_weights(_catalog.catalog().lookup("weights", args.name), args.json)
    d = describe(args.name, kind=args.kind)
    fits = compatible(d.qualified_name) if d.kind == "head" and not args.no_compatible else None
    if args.json:
        print(json.dumps(_as_json(d, fits), indent=2))
        return 0
    facts = [["name", d.name], ["kind", d.kind], ["qualified name", d.qualified_name],
             ["plugin", d.plugin],
             ["distribution", _distribution(d)],
             ["summary", d.summary or "-"]]
    if d.kind == "backbone":
        facts.append(["parameters", f"{d.params:,} ({d.params / 1e6:.2f} M)" if d.params is not None else "-"])
        macs = f"{d.macs:,} ({d.macs / 1e9:.3f} G)" if d.macs is not None else "-"
        facts.append([f"MACs at {d.input_size}x{d.input_size}", macs])
    elif d.requirements is not None:
        facts.append(["needs (defaults)", "; ".join(d.requirements.needs())])
    if fits is not None:
        facts.append(["compatible backbones", ", ".join(fits) or "none"])
    if d.weights:
        facts.append(["named weights", ", ".join(d.weights)])
    for note in d.notes:
        facts.append(["note", note])
    print(format_table(facts, None))
    print()
    print(format_table([[k, _default(v)] for k, v in d.kwargs.items()], ["ARGUMENT", "DEFAULT"]) if d.kwargs
          else "no keyword arguments")
    if d.levels:
        print()
        print(format_table([[i, s.name, s.channels, s.stride] for i, s in enumerate(d.levels)],
                     ["INDEX", "LEVEL", "CHANNELS", "STRIDE"], "rlrr"))
    return 0


def _distribution(found: Any) -> str:
    """``"name version"`` of a description's or entry's distribution; ``"-"`` for a run-time plugin."""
    return f"{found.distribution} {found.version or ''}".strip() if found.distribution else "-"


def _default(value: Any) -> str:
    from ._kwargs import REQUIRED

    return "(required)" if value is REQUIRED else repr(value)


def _as_json(d: Any, fits: list[str] | None) -> dict[str, Any]:
    out = {key: getattr(d, key) for key in ("kind", "name", "qualified_name", "plugin", "distribution",
                                            "version", "summary", "params", "macs", "input_size")}
    out["kwargs"] = {k: _default(v) for k, v in d.kwargs.items()}
    out["levels"] = [{"name": s.name, "channels": s.channels, "stride": s.stride} for s in d.levels]
    out["notes"] = list(d.notes)
    out["weights"] = list(d.weights)
    if fits is not None:
        out["compatible"] = fits
    return out


def _info_weights(found: Any, as_json: bool) -> int:
    """``vertebra info`` for a named checkpoint: where it comes from, how it is checked, what it fits."""
    from ..weights.entry import describe_entry
    from . import _catalog

    entry = found.factory
    facts = describe_entry(entry) | {"qualified_name": found.qualified_name, "plugin": found.plugin}
    if as_json:
        print(json.dumps(facts | {"kind": "weights", "distribution": found.distribution, "version": found.version},
                         indent=2))
        return 0
    rows = [[key.replace("_", " "), "-" if value in ("", None) else value] for key, value in facts.items()
            if key not in ("metrics", "head_kwargs", "backbone_kwargs")]
    rows.append(["distribution", _distribution(found)])
    rows += [["metric " + key, f"{value:g}"] for key, value in facts["metrics"].items()]
    options = {"num_classes": entry.num_classes, **facts["head_kwargs"]}
    name = _catalog.catalog().display_name(found)  # qualified when another plugin shares the name
    rows.append(["build with", f"registry.build({entry.head!r}, backbone={entry.backbone_spec!r}, "
                 + "".join(f"{k}={v!r}, " for k, v in options.items()) + f"weights={name!r})"])
    print(format_table(rows, None))
    return 0


info_command = _Command(_configure_info, _run_info)


# -- plugins ----------------------------------------------------------------------------------------
def _configure_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_plugins(args: argparse.Namespace) -> int:
    from . import plugins

    infos = plugins()
    if args.json:
        print(json.dumps([info.__dict__ | {"backbones": list(info.backbones), "heads": list(info.heads),
                                           "weights": list(info.weights)} for info in infos], indent=2))
    else:
        print(format_table([[i.name, i.distribution or "-", i.version or "-", i.status, len(i.backbones),
                       len(i.heads), len(i.weights), _shorten(i.detail, 90) if i.detail else ""] for i in infos],
                     ["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "BACKBONES", "HEADS", "WEIGHTS", "DETAIL"],
                     "llllrrrl"))
        for info in infos:
            if info.status == "failed" and len(info.detail or "") > 90:
                print(f"\n{info.name}: {info.detail}")
    return 1 if any(i.status == "failed" for i in infos) else 0


plugins_command = _Command(_configure_plugins, _run_plugins)
