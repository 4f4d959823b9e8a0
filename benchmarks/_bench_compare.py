"""Benchmark results: summarize pytest-benchmark's JSON, compare with a baseline, print a table, draw a chart.

What is gated (``compare`` marks these ``REGRESSION`` / ``BELOW``, and ``vertebra bench`` exits 1):

* **throughput, as ratios**: a case's ratio to its primary reference (torchvision where it has the
  model), measured in the same interleaved rounds, must not fall more than ``threshold`` (10%) below
  the baseline's ratio.  Ratios, not images/s, because the machines this runs on are shared: load
  slows ours and the reference alike.  ``absolute=True`` gates images/s instead (dedicated machines);
  cases without a reference are only gated that way.
* **metrics** (accuracy of short training runs, the checkpointing memory cut): a value below the
  baseline's by more than the metric's own ``tolerance``, or below its ``floor`` (a target, checked
  even without a baseline), fails.  Metrics a benchmark marks ``"gated": false`` (accuracy at quick
  sizes) are shown, never gated.

A baseline is the same summary, saved (``benchmarks/baselines/<machine>.json``).  Baselines from a
different mode (full vs quick sizes) are refused: their numbers do not compare.

This module lives with the suite (``benchmarks/``), not in the installed package: it serves
``vertebra bench`` (``_bench_cli.py``, beside it), which needs a checkout anyway.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vertebra.errors import ConfigError
from vertebra.text import format_table

__all__ = ["summarize", "load_summary", "save_summary", "compare", "Comparison", "format_summary",
           "write_chart", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.10
FORMAT_VERSION = 1


def summarize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pytest-benchmark JSON that matter here, keyed by test id (stable across runs)."""
    if "benchmarks" not in raw:
        raise ConfigError("not a pytest-benchmark JSON file (no 'benchmarks' list); produce one with "
                          "'pytest benchmarks --benchmark-json=FILE' or 'vertebra bench --json FILE'")
    run = dict(raw.get("vertebra") or {})
    cases: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for bench in raw["benchmarks"]:
        info = bench.get("extra_info") or {}
        stats = bench.get("stats") or {}
        case = {"group": bench.get("group"), "median_s": stats.get("median"), "rounds": stats.get("rounds"),
                "nodeid": bench.get("fullname")}
        for key in ("ours_ips", "ratio", "primary", "gflop", "gflops", "peak_gflops", "efficiency",
                    "same_architecture", "variant", "images"):
            if key in info:
                case[key] = info[key]
        if info.get("references"):
            case["references"] = {name: dict(values) for name, values in info["references"].items()}
        if info.get("best"):
            case["best"] = dict(info["best"])
        cases[_case_id(bench)] = case
        for name, metric in (info.get("metrics") or {}).items():
            metrics[name] = dict(metric)
    return {"format": FORMAT_VERSION, "mode": run.get("mode", "unknown"), "machine": {
        "cpu": raw.get("machine_info", {}).get("cpu", {}).get("brand_raw") or run.get("cpu"),
        "cpu_count": run.get("cpu_count"), "threads": run.get("threads"), "torch": run.get("torch"),
        "cuda_device": run.get("cuda_device"), "node": raw.get("machine_info", {}).get("node"),
        "matmul_peak_gflops": run.get("matmul_peak_gflops")},
        "command": run.get("command"), "datetime": raw.get("datetime"), "cases": cases, "metrics": metrics}


def _case_id(bench: Mapping[str, Any]) -> str:
    fullname = bench.get("fullname") or bench["name"]
    return fullname.split("::", 1)[-1] if "::" in fullname else fullname


def load_summary(path: str | Path) -> dict[str, Any]:
    """A saved summary (baseline) or a raw pytest-benchmark JSON, whichever the file holds."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark file {str(path)!r} does not exist; record one with "
                          f"'vertebra bench --save {path}'")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"benchmark file {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"benchmark file {str(path)!r} holds {type(data).__name__}, not a JSON object")
    if data.get("format") == FORMAT_VERSION and "cases" in data:
        return data
    return summarize(data)


def save_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return path


@dataclass
class Row:
    """One compared figure."""

    kind: str                 # "throughput" or "metric"
    name: str
    current: float | None
    baseline: float | None
    status: str               # ok, REGRESSION, BELOW, new, missing, info
    note: str = ""


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.status in ("REGRESSION", "BELOW")]

    @property
    def ok(self) -> bool:
        return not self.failed


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any] | None, *,
            threshold: float = DEFAULT_THRESHOLD, absolute: bool = False) -> Comparison:
    """Gate ``current`` against ``baseline`` (see the module docstring); ``None``: only metric floors."""
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be between 0 and 1 (a fraction, 0.10 = 10%), got {threshold!r}",
                          path="threshold")
    if baseline is not None and baseline.get("mode") != current.get("mode"):
        raise ConfigError(f"the baseline was measured in {baseline.get('mode')!r} mode and this run in "
                          f"{current.get('mode')!r} mode; their sizes differ, so the numbers do not compare "
                          f"(use a baseline saved from the same mode: with or without --quick)")
    result = Comparison()
    base_cases = (baseline or {}).get("cases", {})
    for name, case in current.get("cases", {}).items():
        if baseline is None:
            break
        result.rows.append(_throughput_row(name, case, base_cases.get(name), threshold, absolute))
    for name in base_cases:
        if baseline is not None and name not in current.get("cases", {}):
            result.rows.append(Row("throughput", name, None, _gated_value(base_cases[name], absolute), "missing",
                                   "in the baseline, not in this run (deselected or removed)"))
    base_metrics = (baseline or {}).get("metrics", {})
    for name, metric in current.get("metrics", {}).items():
        result.rows.append(_metric_row(name, metric, base_metrics.get(name)))
    return result


def _gated_value(case: Mapping[str, Any], absolute: bool) -> float | None:
    return case.get("ours_ips") if absolute else case.get("ratio")


def _throughput_row(name: str, case: Mapping[str, Any], base: Mapping[str, Any] | None, threshold: float,
                    absolute: bool) -> Row:
    now = _gated_value(case, absolute)
    what = "images/s" if absolute else f"ratio to {case.get('primary')}"
    if base is None:
        return Row("throughput", name, now, None, "new", "not in the baseline")
    before = _gated_value(base, absolute)
    if now is None or before is None:
        return Row("throughput", name, now, before, "info", "no reference: not gated (use --absolute)")
    change = now / before - 1
    status = "REGRESSION" if now < (1 - threshold) * before else "ok"
    attempts = case.get("attempts")
    tried = f" (best of {len(attempts)} runs)" if attempts and len(attempts) > 1 else ""
    return Row("throughput", name, now, before, status, f"{what} {change:+.1%}{tried}")


def _metric_row(name: str, metric: Mapping[str, Any], base: Mapping[str, Any] | None) -> Row:
    value = metric.get("value")
    higher = metric.get("higher_is_better", True)
    sign = 1 if higher else -1
    floor = metric.get("floor")
    notes, status = [], "ok"
    if metric.get("gated") is False:
        return Row("metric", name, value, base.get("value") if base else None, "info",
                   "not gated in this mode (quick/smoke sizes)")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Row("metric", name, None, base.get("value") if base else None, "BELOW", "no value recorded")
    if floor is not None and sign * value < sign * floor:
        status = "BELOW"
        notes.append(f"{'below' if higher else 'above'} its target {floor:g}")
    before = base.get("value") if base else None
    if before is not None:
        tolerance = base.get("tolerance", metric.get("tolerance", 0.0))
        if sign * (value - before) < -tolerance:
            status = "BELOW"
            notes.append(f"more than {tolerance:g} {'below' if higher else 'above'} the baseline")
        elif not notes:
            notes.append(f"within {tolerance:g} of the baseline")
    elif not notes:
        notes.append("no baseline" if floor is None else f"meets its target {floor:g}")
    return Row("metric", name, value, before, status, "; ".join(notes))


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def format_summary(summary: Mapping[str, Any], comparison: Comparison | None = None) -> str:
    """A readable table: each case's images/s, the references', ratios, GFLOP/s and roofline fraction;
    then metrics; then, with a comparison, the gate verdicts."""
    machine = summary.get("machine", {})
    peaks = ", ".join(f"{key} {value:.0f}" for key, value in (machine.get("matmul_peak_gflops") or {}).items())
    lines = [f"mode: {summary.get('mode')}   cpu: {machine.get('cpu')} ({machine.get('threads')} threads)   "
             f"cuda: {machine.get('cuda_device') or '-'}   torch {machine.get('torch')}   "
             f"matmul peak GFLOP/s: {peaks or '-'}"]
    rows = []
    for name, case in summary.get("cases", {}).items():
        references = case.get("references", {})
        refs = ", ".join(f"{ref} {_fmt(values.get('ips'))} ({_fmt(values.get('ratio'), 2)}x)"
                         for ref, values in references.items())
        time_s = case.get("median_s")
        best = case.get("best")
        if best:
            refs += f"; best of ours: {best['path']} ({_fmt(best.get('ratio'), 3)}x vs {case.get('primary')})"
        rows.append([name, _fmt(case.get("ours_ips")), refs or "-",
                     _fmt(case.get("gflops")), _fmt(case.get("efficiency"), 2) if "efficiency" in case else "-",
                     _fmt(time_s * 1000 if time_s else None)])
    lines.append(format_table(rows, ["case", "ours img/s", "references img/s (ours/ref speed)", "GFLOP/s",
                                     "of peak", "median ms"]))
    metrics = summary.get("metrics", {})
    if metrics:
        lines.append("")
        lines.append(format_table([[name, _fmt(m.get("value"), 4), _fmt(m.get("tolerance")), _fmt(m.get("floor"))]
                                   for name, m in metrics.items()], ["metric", "value", "tolerance", "floor"]))
    if comparison is not None:
        lines.append("")
        lines.append(format_table([[row.status, row.kind, row.name, _fmt(row.current), _fmt(row.baseline), row.note]
                                   for row in comparison.rows],
                                  ["status", "kind", "name", "now", "baseline", "note"]))
        verdict = ("PASS: no regression" if comparison.ok else
                   f"FAIL: {len(comparison.failed)} regression(s): " + ", ".join(r.name for r in comparison.failed))
        lines.append(verdict)
    return "\n".join(lines)


def _short(name: str) -> str:
    """A chart label: ``test_classifier_inference[b0-cpu-fp32-cl]`` -> ``classifier inference b0 cpu-fp32-cl``."""
    base, _, params = name.partition("[")
    return (base.removeprefix("test_").replace("_", " ") + " " + params.rstrip("]").replace("-cpu", " cpu")
            .replace("-cuda", " cuda")).strip()


def write_chart(summary: Mapping[str, Any], path: str | Path) -> Path:
    """A PNG bar chart: for every case with references, our speed relative to each one (1 = parity).

    Ratios rather than images/s: cases span three orders of magnitude of images/s, and the ratio is
    the figure measured in interleaved rounds (see the module docstring).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [(name, case) for name, case in summary.get("cases", {}).items()
             if any(values.get("ratio") for values in (case.get("references") or {}).values())
             and not str(case.get("group", "")).startswith("training memory")]  # that ratio is recompute cost
    if not cases:
        raise ConfigError("nothing to chart: no case in these results has both our images/s and a reference's "
                          "(benchmarks disabled, or only start-up cases selected)")
    sources = sorted({ref for _, case in cases for ref in case["references"]})
    colours = {source: f"C{i}" for i, source in enumerate(sources)}
    bars, ticks, row = [], [], 0.0
    for name, case in cases:  # each case: one bar per reference it has, packed, then a gap
        refs = [(ref, v["ratio"]) for ref, v in case["references"].items() if v.get("ratio")]
        same = case.get("same_architecture") or {}
        ticks.append((row + (len(refs) - 1) / 2, _short(name)))
        for ref, ratio in refs:
            bars.append((row, ratio, ref, same.get(ref, True)))
            row += 1
        row += 0.6
    fig, ax = plt.subplots(figsize=(10, 0.16 * row + 1.2))
    for source in sources:
        mine = [(y, ratio, same) for y, ratio, ref, same in bars if ref == source]
        drawn = ax.barh([y for y, _, _ in mine], [r for _, r, _ in mine], height=0.85, color=colours[source],
                        label=source)
        ax.bar_label(drawn, labels=[f"{r:.2f}" + ("" if same else " (different architecture)") for _, r, same in mine],
                     fontsize=6, padding=2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([y for y, _ in ticks])
    ax.set_yticklabels([label for _, label in ticks], fontsize=7)
    ax.set_ylim(row, -1)
    ax.set_xlabel("vertebra speed / reference speed (median of interleaved rounds; > 1: vertebra faster)")
    machine = summary.get("machine", {})
    ax.set_title(f"vertebra vs torchvision / timm / smp ({summary.get('mode')} mode, "
                 f"{machine.get('cuda_device') or machine.get('cpu')}, {machine.get('threads')} threads)", fontsize=9,
                 pad=22)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(sources), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
