"""The namespaces cost nothing until named: `vertebra list` imports neither torch nor timm, and
`vertebra list 'timm:*resnet*'` asks timm's own listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vertebra.cli import main

REPO = Path(__file__).resolve().parents[2]
PLAIN_LIST = """
import json, sys
from vertebra.cli import main
main(["list", "--json"])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))))
"""


def test_plain_listing_imports_no_zoo_with_timm_installed():
    done = subprocess.run([sys.executable, "-c", PLAIN_LIST], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows, _, heavy = done.stdout.rpartition("\n[")
    assert json.loads("[" + heavy) == []
    assert not [row for row in json.loads(rows) if ":" in row["name"]]  # namespaces are not enumerated


def test_a_namespace_pattern_lists_the_models_of_its_library(capsys):
    assert main(["list", "--kind", "backbone", "--json", "timm:*resnet18*"]) == 0
    timm_rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in timm_rows} >= {"timm:resnet18", "timm:resnet18d", "timm:seresnet18"}
    assert {row["plugin"] for row in timm_rows} == {"vertebra"}
    assert timm_rows[0]["summary"].startswith("A timm model (features_only) as a vertebra backbone")
    assert main(["list", "--kind", "backbone", "--json", "torchvision:regnet_x_4*"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["torchvision:regnet_x_400mf"]
    assert main(["list", "timm:no_such_model*"]) == 1
