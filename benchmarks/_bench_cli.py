"""``vertebra bench``: run the benchmark suite, print a table, compare with a baseline, save, chart.

::

    vertebra bench --quick                                   # minutes: small sizes, 3 rounds
    vertebra bench --compare benchmarks/baselines/cpu.json   # exit 1 on a >10% ratio drop or a metric below tolerance
    vertebra bench --save benchmarks/baselines/cpu.json --chart bench.png
    vertebra bench --from-json results.json --compare benchmarks/baselines/cpu.json   # compare without re-running
    vertebra bench -k test_deploy --update benchmarks/baselines/cpu.json   # re-record some cases, keep the rest

This tooling lives with the suite it runs (``benchmarks/``, pytest-benchmark), in the source tree,
not in the installed package: ``vertebra bench`` (``vertebra.cli``) finds this folder in a checkout
and loads this module from it.  ``--benchmarks DIR`` runs another copy of the suite.  What is
gated, and why ratios rather than images/s, is in ``_bench_compare.py`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vertebra.errors import ConfigError

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the suite's modules import each other by bare name (see conftest.py)
    sys.path.insert(0, _HERE)

from _bench_compare import DEFAULT_THRESHOLD, compare, format_summary, load_summary, save_summary, \
    summarize, write_chart  # noqa: E402

EXIT_REGRESSION = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (minutes, not an hour)")
    parser.add_argument("--compare", metavar="BASELINE", help="baseline JSON to gate against (exit 1 on regression)")
    parser.add_argument("--save", metavar="BASELINE", help="write this run's summary as a baseline JSON")
    parser.add_argument("--update", metavar="BASELINE",
                        help="merge this run's cases and metrics into an existing baseline of the same mode, "
                             "keeping its other cases (re-record a -k selection)")
    parser.add_argument("--chart", metavar="PNG", help="write a bar chart of images/s vs torchvision/timm/smp")
    parser.add_argument("--json", metavar="FILE", help="keep pytest-benchmark's raw JSON here")
    parser.add_argument("--from-json", metavar="FILE",
                        help="skip running: read results (raw pytest-benchmark JSON or a saved summary)")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="only cases matching this pytest -k expression")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"allowed throughput drop as a fraction (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--absolute", action="store_true",
                        help="gate images/s instead of ratios to the reference (dedicated machines only)")
    parser.add_argument("--confirm", type=int, default=1, metavar="N",
                        help="re-run a case that regressed up to N times and keep its best run: on a shared "
                             "machine a burst of load must not fail the gate, a real regression reproduces "
                             "(default 1; 0 gates the first run)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for the run (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile references (slow on CPU)")
    parser.add_argument("--benchmarks", metavar="DIR", help="the benchmarks folder to run (default: ./benchmarks, "
                        "then the folder holding this tooling)")


def run(args: argparse.Namespace) -> int:
    baseline = load_summary(args.compare) if args.compare else None  # fail fast on a bad path
    suite_failed = False
    if args.from_json:
        summary = load_summary(args.from_json)
    else:
        summary, suite_failed = _run_suite(args)
    comparison = compare(summary, baseline, threshold=args.threshold, absolute=args.absolute)
    for _ in range(0 if args.from_json else max(args.confirm, 0)):
        regressed = [row.name for row in comparison.failed if row.kind == "throughput"]
        if not regressed:
            break
        print(f"re-running {len(regressed)} regressed case(s) to confirm: {', '.join(regressed)}", flush=True)
        nodeids = [summary["cases"][name]["nodeid"] for name in regressed if summary["cases"][name].get("nodeid")]
        rerun, _ = _run_suite(args, nodeids)
        _keep_best(summary, rerun, regressed, absolute=args.absolute)
        comparison = compare(summary, baseline, threshold=args.threshold, absolute=args.absolute)
    show = comparison if (baseline is not None or comparison.rows) else None
    print(format_summary(summary, show))
    if args.save:
        print(f"saved baseline: {save_summary(summary, args.save)}")
    if args.update:
        print(f"updated baseline: {save_summary(merge(load_summary(args.update), summary), args.update)}")
    if args.chart:
        print(f"chart: {write_chart(summary, args.chart)}")
    if suite_failed:
        print("FAIL: some benchmarks raised (see pytest's output above); their cases are missing", file=sys.stderr)
    return 0 if comparison.ok and not suite_failed else EXIT_REGRESSION


def merge(baseline: dict, summary: dict) -> dict:
    """``baseline`` with ``summary``'s cases and metrics replacing or joining its own (same mode only).

    The machine and command are the baseline's; ``updates`` lists each merged run's command, time,
    machine and cases (a merged run may come from another machine: compare its ratios only).
    """
    if baseline.get("mode") != summary.get("mode"):
        raise ConfigError(f"cannot merge a {summary.get('mode')!r}-mode run into a {baseline.get('mode')!r}-mode "
                          "baseline: their sizes differ")
    merged = {**baseline, "cases": {**baseline.get("cases", {}), **summary.get("cases", {})},
              "metrics": {**baseline.get("metrics", {}), **summary.get("metrics", {})}}
    merged["updates"] = [*baseline.get("updates", []), {"command": summary.get("command"),
                                                        "datetime": summary.get("datetime"),
                                                        "machine": summary.get("machine"),
                                                        "cases": sorted(summary.get("cases", {}))}]
    return merged


def find_benchmarks(explicit: str | None = None) -> Path:
    """The benchmarks folder: ``explicit``, else ./benchmarks, else the one this module lives in."""
    candidates = [Path(explicit)] if explicit else [Path.cwd() / "benchmarks", Path(__file__).resolve().parent]
    for candidate in candidates:
        if (candidate / "conftest.py").is_file():
            return candidate
    raise ConfigError("cannot find the benchmark suite (a 'benchmarks' folder with conftest.py) at "
                      + " or ".join(repr(str(c)) for c in candidates)
                      + "; run from a vertebra source checkout or pass --benchmarks DIR")


def _keep_best(summary: dict, rerun: dict, names: list[str], *, absolute: bool) -> None:
    """For each re-run case keep the better of the runs (by the gated figure), noting every attempt."""
    key = "ours_ips" if absolute else "ratio"
    for name in names:
        old, new = summary["cases"][name], rerun["cases"].get(name)
        if new is None:
            continue
        attempts = old.get("attempts", [old.get(key)]) + [new.get(key)]
        best = new if (new.get(key) or 0) > (old.get(key) or 0) else old
        summary["cases"][name] = {**best, "attempts": attempts}


def _run_suite(args: argparse.Namespace, nodeids: list[str] | None = None) -> tuple[dict, bool]:
    """Run pytest on the suite (or on ``nodeids``); the summary, and whether any benchmark failed."""
    folder = find_benchmarks(args.benchmarks)
    with tempfile.TemporaryDirectory() as scratch:
        raw_path = Path(args.json) if args.json and not nodeids else Path(scratch) / "benchmarks.json"
        targets = nodeids or [str(folder)]
        command = [sys.executable, "-m", "pytest", *targets, "-p", "no:cacheprovider", "-q",
                   f"--benchmark-json={raw_path}", "--benchmark-columns=median,rounds"]
        if args.quick:
            command.append("--quick")
        if args.keyword and not nodeids:
            command += ["-k", args.keyword]
        if args.threads:
            command.append(f"--bench-threads={args.threads}")
        if args.no_compile:
            command.append("--no-compile")
        print("running: " + " ".join(command), flush=True)
        # a bench started from inside a pytest-xdist worker must not look like one: pytest-benchmark
        # disables itself (and writes an empty JSON) when it sees the worker's variables
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
        done = subprocess.run(command, cwd=folder.parent, env=env)
        if not raw_path.is_file():
            raise ConfigError(f"the benchmark run wrote no results (pytest exit status {done.returncode}); "
                              f"see its output above")
        raw = json.loads(raw_path.read_text())
    return summarize(raw), done.returncode not in (0, 5)  # 5: nothing selected by -k
