"""``vertebra bench`` and its comparison logic: what is gated fails, what is not never does.

The tooling lives with the suite (``benchmarks/_bench_cli.py``, ``benchmarks/_bench_compare.py``), not
in the installed package; ``vertebra bench`` finds it in a checkout and says so outside one.
Synthetic pytest-benchmark JSON drives the gate paths (fast); one real ``vertebra bench --quick`` run
on a single small case proves the suite, the JSON and the table fit together.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vertebra import cli
from vertebra.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "benchmarks") not in sys.path:  # the suite's modules import each other by bare name
    sys.path.insert(0, str(REPO / "benchmarks"))

from _bench_cli import find_benchmarks  # noqa: E402
from _bench_compare import compare, format_summary, load_summary, save_summary, summarize, write_chart  # noqa: E402


def _bench(name, *, ratio=None, ours_ips=None, median=0.1, metrics=None, group="g"):
    info = {}
    if ours_ips is not None:
        info.update(ours_ips=ours_ips, images=8, primary="torchvision" if ratio is not None else None)
    if ratio is not None:
        info["ratio"] = ratio
        info["references"] = {"torchvision": {"ips": ours_ips / ratio, "ratio": ratio}}
    if metrics:
        info["metrics"] = metrics
    return {"name": name, "fullname": f"benchmarks/test_x.py::{name}", "group": group,
            "stats": {"median": median, "rounds": 5}, "extra_info": info}


def _raw(*benchmarks, mode="full"):
    return {"benchmarks": list(benchmarks), "datetime": "2026-01-01T00:00:00",
            "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "node": "n"},
            "vertebra": {"mode": mode, "threads": 2, "torch": "x", "cuda_device": None, "cpu_count": 2,
                         "command": "pytest benchmarks"}}


def _metric(value, tolerance=0.05, **extra):
    return {"value": value, "higher_is_better": True, "tolerance": tolerance, **extra}


BASE = summarize(_raw(_bench("test_a[b0]", ratio=1.2, ours_ips=100.0),
                      _bench("test_b[b3]", ratio=0.9, ours_ips=40.0),
                      _bench("test_c[det]", ours_ips=5.0),
                      _bench("test_acc", metrics={"top1": _metric(0.90)})))


def _status(comparison, name):
    return next(row.status for row in comparison.rows if row.name == name)


def test_summary_keeps_what_is_compared():
    case = BASE["cases"]["test_a[b0]"]
    assert case["ratio"] == 1.2 and case["ours_ips"] == 100.0 and case["median_s"] == 0.1
    assert case["references"]["torchvision"]["ratio"] == 1.2
    assert BASE["metrics"]["top1"]["value"] == 0.90
    assert BASE["mode"] == "full" and BASE["machine"]["cpu"] == "Test CPU"


@pytest.mark.parametrize("ratio, expected", [(1.2, "ok"), (1.09, "ok"), (1.07, "REGRESSION"), (2.0, "ok")])
def test_ratio_drop_over_ten_percent_is_a_regression(ratio, expected):
    current = summarize(_raw(_bench("test_a[b0]", ratio=ratio, ours_ips=10.0)))  # absolute figures ignored
    result = compare(current, BASE)
    assert _status(result, "test_a[b0]") == expected
    assert result.ok == (expected == "ok")


def test_absolute_mode_gates_images_per_second():
    current = summarize(_raw(_bench("test_a[b0]", ratio=1.2, ours_ips=80.0), _bench("test_c[det]", ours_ips=5.0)))
    assert compare(current, BASE).ok                                   # ratio unchanged: fine
    result = compare(current, BASE, absolute=True)
    assert _status(result, "test_a[b0]") == "REGRESSION"               # 100 -> 80 images/s
    assert _status(result, "test_c[det]") == "ok"                      # no reference: gated only here


def test_new_missing_and_unreferenced_cases_do_not_fail():
    current = summarize(_raw(_bench("test_c[det]", ours_ips=1.0), _bench("test_new", ratio=0.5, ours_ips=1.0)))
    result = compare(current, BASE)
    assert _status(result, "test_c[det]") == "info"
    assert _status(result, "test_new") == "new"
    assert _status(result, "test_a[b0]") == "missing"
    assert result.ok


@pytest.mark.parametrize("value, expected", [(0.89, "ok"), (0.851, "ok"), (0.84, "BELOW")])
def test_metric_below_its_tolerance_fails(value, expected):
    current = summarize(_raw(_bench("test_acc", metrics={"top1": _metric(value)})))
    assert _status(compare(current, BASE), "top1") == expected


def test_metric_floor_is_checked_without_a_baseline():
    current = summarize(_raw(_bench("test_mem", metrics={"cut": _metric(0.4, floor=0.5)}),
                             _bench("test_ok", metrics={"fine": _metric(0.7, floor=0.5)})))
    result = compare(current, None)
    assert _status(result, "cut") == "BELOW" and _status(result, "fine") == "ok" and not result.ok


def test_lower_is_better_metric_and_ungated_metric():
    base = summarize(_raw(_bench("t", metrics={"loss": _metric(1.0, 0.1, higher_is_better=False)})))
    worse = summarize(_raw(_bench("t", metrics={"loss": _metric(1.2, 0.1, higher_is_better=False)})))
    assert _status(compare(worse, base), "loss") == "BELOW"
    quick = summarize(_raw(_bench("t", metrics={"loss": _metric(9.0, 0.1, higher_is_better=False, gated=False)})))
    assert _status(compare(quick, base), "loss") == "info"


def test_modes_do_not_mix_and_threshold_is_checked():
    quick = summarize(_raw(_bench("test_a[b0]", ratio=1.2, ours_ips=1.0), mode="quick"))
    with pytest.raises(ConfigError, match="quick"):
        compare(quick, BASE)
    with pytest.raises(ConfigError, match="threshold"):
        compare(BASE, BASE, threshold=10)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_summary(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_summary(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="pytest-benchmark"):
        load_summary(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="benchmarks"):
        find_benchmarks(str(tmp_path))


def test_saved_baseline_round_trips(tmp_path):
    path = save_summary(BASE, tmp_path / "baselines" / "cpu.json")
    assert load_summary(path) == json.loads(json.dumps(BASE))
    assert compare(load_summary(path), BASE).ok


def test_table_and_chart(tmp_path):
    text = format_summary(BASE, compare(BASE, BASE))
    assert "test_a[b0]" in text and "torchvision 83.3 (1.2x)" in text and "PASS" in text
    png = write_chart(BASE, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="nothing to chart"):
        write_chart(summarize(_raw(_bench("t", metrics={"m": _metric(1.0)}))), tmp_path / "empty.png")


def _write(tmp_path, name, summary_or_raw):
    path = tmp_path / name
    path.write_text(json.dumps(summary_or_raw))
    return str(path)


def test_cli_exit_status_follows_the_gate(tmp_path, capsys):
    base = _write(tmp_path, "base.json", BASE)
    same = _write(tmp_path, "same.json", _raw(_bench("test_a[b0]", ratio=1.19, ours_ips=99.0)))
    worse = _write(tmp_path, "worse.json", _raw(_bench("test_a[b0]", ratio=0.8, ours_ips=99.0)))
    assert cli.main(["bench", "--from-json", same, "--compare", base]) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli.main(["bench", "--from-json", worse, "--compare", base, "--save", str(tmp_path / "new.json")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "FAIL" in out and (tmp_path / "new.json").is_file()
    assert cli.main(["bench", "--from-json", worse, "--compare", base, "--threshold", "0.5"]) == 0
    assert cli.main(["bench", "--from-json", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_update_merges_a_run_into_a_baseline(tmp_path, capsys):
    base = _write(tmp_path, "base.json", BASE)
    run = _write(tmp_path, "run.json", _raw(_bench("test_a[b0]", ratio=1.3, ours_ips=99.0),
                                            _bench("test_new[x]", ratio=1.1, ours_ips=5.0)))
    assert cli.main(["bench", "--from-json", run, "--update", base]) == 0
    merged = load_summary(base)
    assert merged["cases"]["test_a[b0]"]["ratio"] == 1.3 and merged["cases"]["test_new[x]"]["ratio"] == 1.1
    assert set(BASE["cases"]) <= set(merged["cases"]) and merged["updates"][-1]["cases"] == ["test_a[b0]", "test_new[x]"]
    quick = _write(tmp_path, "quick.json", _raw(_bench("test_a[b0]", ratio=1.0, ours_ips=90.0), mode="quick"))
    assert cli.main(["bench", "--from-json", quick, "--update", base]) == 2
    assert "cannot merge" in capsys.readouterr().err


def test_tooling_is_not_in_the_installed_package():
    package = Path(cli.__file__).resolve().parent
    for name in ("_bench_cli.py", "_bench_compare.py"):
        assert not (package / name).exists() and (REPO / "benchmarks" / name).is_file(), name
    assert cli.checkout_benchmarks() == REPO / "benchmarks"


def test_bench_finds_the_checkout_beside_the_package(tmp_path, monkeypatch, capsys):
    """From any folder, an editable install's ``vertebra bench`` runs the checkout's tooling."""
    base = _write(tmp_path, "base.json", BASE)
    monkeypatch.chdir(tmp_path)  # no benchmarks/ here
    assert cli.main(["bench", "--from-json", base, "--compare", base]) == 0
    assert "PASS" in capsys.readouterr().out


def test_bench_outside_a_checkout_is_one_clear_error(tmp_path):
    """An installed package with no checkout around it: one ``error:`` line naming the fix, exit 2."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "vertebra", site / "vertebra", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "vertebra", "bench", "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "vertebra checkout" in lines[0] and str(site) in lines[0] and not done.stdout


def test_real_quick_run_of_one_case(tmp_path, capsys, monkeypatch):
    """End to end: pytest on the real suite (one small case), JSON, summary, table, chart, baseline, and a
    regression against an unreachable baseline that survives its confirmation re-run (exit 1)."""
    monkeypatch.chdir(REPO)
    case_id = "test_classifier_inference[mobilenet_v3_small-cpu-fp32-cl]"
    unreachable = {"format": 1, "mode": "quick", "metrics": {},
                   "cases": {case_id: {"ratio": 100.0, "ours_ips": 1e9, "primary": "torchvision"}}}
    raw, chart, saved = tmp_path / "raw.json", tmp_path / "chart.png", tmp_path / "quick.json"
    status = cli.main(["bench", "--quick", "-k", "test_classifier_inference and mobilenet_v3_small and cpu",
                       "--json", str(raw), "--chart", str(chart), "--save", str(saved),
                       "--compare", _write(tmp_path, "unreachable.json", unreachable), "--confirm", "1"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "re-running 1 regressed case(s)" in out and "best of 2 runs" in out and "REGRESSION" in out
    summary = load_summary(saved)
    assert summary["mode"] == "quick"
    case = summary["cases"][case_id]
    assert len(case["attempts"]) == 2 and case["ratio"] == max(case["attempts"])
    assert case["ours_ips"] > 0 and set(case["references"]) == {"torchvision", "timm"} and case["ratio"] > 0
    assert case["same_architecture"] == {"torchvision": True, "timm": True}
    assert case["gflops"] > 0 and 0 < case["efficiency"]
    assert chart.is_file() and raw.is_file() and case_id in out
    assert cli.main(["bench", "--from-json", str(saved), "--compare", str(saved)]) == 0  # a run equals itself


def test_saved_bytes_counts_saved_tensors_and_checkpoint_inputs():
    """The memory benchmark's counter on a model whose saved tensors are known exactly."""
    import sys

    import torch
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _harness import SavedBytes

    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100))
    x = torch.randn(10, 100)  # 4000 bytes
    # Linear saves its input, ReLU its output (which the second Linear saves too: one storage).
    assert SavedBytes(block).measure(lambda: block(x).sum()) == 4000 + 4000
    counter = SavedBytes(block, checkpointed=[block], segments=[block])
    kept = counter.measure(lambda: checkpoint(block, x, use_reentrant=False).sum())
    assert kept == 4000  # only the segment's input survives to backward
    assert block[0].weight.grad is not None


def test_best_path_is_the_fastest_of_ours_against_the_primary():
    from _harness import _best_path

    ours = [1.0, 1.0, 1.0]
    refs = {"openvino": [1.2, 1.1, 1.3], "ort": [0.5, 0.6, 0.5], "eager": [3.0, 3.0, 3.0]}
    best = _best_path("ours", ours, refs, ("ort",), "openvino", 8)
    assert best["path"] == "ort" and best["ratio"] == pytest.approx(1.2 / 0.5) and best["ips"] == pytest.approx(16)
    assert _best_path("ours", ours, refs, (), "openvino", 8) == {"path": "ours", "ips": 8.0, "ratio": 1.2}
