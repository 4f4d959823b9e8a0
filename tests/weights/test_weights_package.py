"""The package's shape: its public names, what stays torch-free, and how names reach the registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vertebra.weights
from vertebra import lazy, plugins, registry
from vertebra.weights import names


def test_every_public_name_resolves_and_the_plugin_api_shares_the_entry_type():
    for name in vertebra.weights.__all__:
        assert getattr(vertebra.weights, name) is not None, name
    assert plugins.WeightsEntry is vertebra.weights.WeightsEntry
    assert set(vertebra.weights.__all__) <= set(dir(vertebra.weights))


def test_entries_their_table_and_their_lookup_import_no_torch():
    probe = ("import json, sys\n"
             "from vertebra.weights import WeightsEntry, describe_entry, named_weights\n"
             "rows = [describe_entry(entry)['name'] for entry in named_weights().values()]\n"
             "print(json.dumps([len(rows), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))]))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, heavy = json.loads(done.stdout)
    assert count >= 19 and heavy == []


def test_named_checkpoints_are_answered_by_the_registry():
    assert names.checkpoints() is sys.modules["vertebra.registry._weights"]
    assert sorted(names.named_weights()) == registry.list_weights()


def test_a_question_nobody_answers_is_a_lookup_error():
    with pytest.raises(LookupError, match="nothing in this installation answers 'no such question'"):
        lazy.provided("no such question")
