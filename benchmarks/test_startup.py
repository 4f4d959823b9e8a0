"""Start-up cost: ``import vertebra`` and ``vertebra list`` next to ``import torch, torchvision``.

Each case runs in a fresh interpreter (a subprocess, so nothing is cached in ``sys.modules``), in one
pytest-benchmark group, so the table shows them side by side:

* ``python -c "import vertebra"``: should stay near bare interpreter start-up (no torch, no plugins);
* ``python -c "import torch, torchvision"``: the floor any command that builds a model pays;
* ``python -m vertebra list``: plugin discovery + the built-in families' imports + the table;
* ``python -c "pass"``: the interpreter alone, to subtract.

``extra_info`` records which heavy modules each step imported.  A benchmark reports; nothing here
asserts on time.  Run: ``pytest benchmarks/test_startup.py --benchmark-group-by=group``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CASES = {
    "python": [sys.executable, "-c", "pass"],
    "import vertebra": [sys.executable, "-c", "import vertebra"],
    "import torch, torchvision": [sys.executable, "-c", "import torch, torchvision"],
    "vertebra list": [sys.executable, "-m", "vertebra", "list"],
}

PROBE = ("import json, sys, vertebra; "
         "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'pluggy', 'yaml'})))")


def _run(command):
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("case", list(CASES))
def test_startup(benchmark, case):
    benchmark.group = "startup (fresh interpreter)"
    benchmark.extra_info["command"] = " ".join(CASES[case][1:])
    if case == "import vertebra":
        benchmark.extra_info["heavy_modules_imported"] = json.loads(_run([sys.executable, "-c", PROBE]).stdout)
    done = benchmark.pedantic(_run, args=(CASES[case],), rounds=3, iterations=1, warmup_rounds=1)
    if case == "vertebra list":
        assert "efficientnet_b0" in done.stdout  # it really listed the built-in families
