"""The named-weights cache is keyed per entry (issue 17, finding 8); never touches the network.

Keyed by the URL's file name, two entries whose URLs end in ``model.safetensors`` shared one cached
file for good, and query/fragment text leaked into the file name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vertebra.errors import WeightsError
from vertebra.weights import cache, load_weights
from vertebra.weights.cache import cache_dir, sha256_of, url_file_name
from vertebra.weights.entry import WeightsEntry


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VERTEBRA_OFFLINE", raising=False)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)


def publish(tmp_path, folder: str, seed: int, name: str = "model.safetensors", url_tail: str = ""):
    """A server-side file of one Tiny's weights and its entry; every entry's file is called ``name``."""
    torch.manual_seed(seed)
    server = tmp_path / "server" / folder
    server.mkdir(parents=True)
    save_file(Tiny().state_dict(), str(server / name))
    entry = WeightsEntry(name=f"tiny.{folder}", url=(server / name).as_uri() + url_tail,
                         sha256=sha256_of(server / name), backbone="tiny", head="classifier", num_classes=2)
    return entry, server / name


@pytest.fixture
def downloads(monkeypatch):
    """A fake downloader serving file:// URLs (query and fragment ignored), recording each fetch."""
    calls = []

    def fake(url, destination, progress):
        calls.append(url)
        shutil.copyfile(Path(url.removeprefix("file://").split("?")[0].split("#")[0]), destination)

    monkeypatch.setattr(cache, "_download_url", fake)
    return calls


def test_two_entries_with_the_same_file_name_do_not_collide(tmp_path, downloads):
    first, first_file = publish(tmp_path, "alpha", seed=1)
    second, second_file = publish(tmp_path, "beta", seed=2)
    assert first.filename == second.filename == "model.safetensors"
    assert first.path != second.path
    for _ in range(2):                       # and again from the cache, in both orders
        for entry, source in ((first, first_file), (second, second_file)):
            model = Tiny()
            report = load_weights(model, entry)
            assert report.path == entry.path and report.sha256 == sha256_of(source)
            assert entry.path.read_bytes() == source.read_bytes()
    assert len(downloads) == 2


def test_query_and_fragment_stay_out_of_the_file_name(tmp_path, downloads):
    entry, source = publish(tmp_path, "gamma", seed=3, url_tail="?token=abc&x=1#part")
    assert entry.filename == "model.safetensors"
    load_weights(Tiny(), entry)
    assert entry.path.name == "model.safetensors" and "?" not in str(entry.path) and "#" not in str(entry.path)


@pytest.mark.parametrize("url, name", [
    ("https://example.com/a/b/model.pth?download=1", "model.pth"),
    ("https://example.com/a/model%20v2.pth#x", "model_v2.pth"),
    ("https://example.com/a/..%2F..%2Fescape.pth", ".._.._escape.pth"),
    ("https://example.com/a/..", "weights"),
])
def test_url_file_names_are_safe(url, name):
    assert url_file_name(url) == name


def test_the_offline_error_names_the_entry_s_own_path(tmp_path):
    entry, _ = publish(tmp_path, "delta", seed=4)
    with pytest.raises(WeightsError) as info:
        load_weights(Tiny(), entry, download=False)
    assert f"place it at '{entry.path}'" in str(info.value)
    assert entry.path.parent.parent == cache_dir() / "checkpoints"


def test_a_file_in_the_old_flat_layout_is_adopted_only_by_its_own_entry(tmp_path, downloads):
    first, first_file = publish(tmp_path, "alpha", seed=1)
    second, _ = publish(tmp_path, "beta", seed=2)
    legacy = cache_dir() / "checkpoints" / "model.safetensors"
    legacy.parent.mkdir(parents=True)
    shutil.copyfile(first_file, legacy)
    load_weights(Tiny(), second)              # not its hash: left alone, the entry downloads its own
    assert legacy.is_file() and len(downloads) == 1
    load_weights(Tiny(), first)               # its hash: moved into the entry's folder, no download
    assert not legacy.exists() and first.path.is_file() and len(downloads) == 1


def test_a_download_killed_halfway_leaves_nothing_for_good(tmp_path, downloads):
    import subprocess
    import sys

    from vertebra import atomic

    entry, _ = publish(tmp_path, "eps", seed=5)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    folder = entry.path.parent
    folder.mkdir(parents=True)
    orphan = folder / f".{entry.filename}.{atomic._HOST}-{process.pid}.abcd1234.partial"
    live = folder / f".{entry.filename}.{atomic._HOST}-{os.getpid()}.efgh5678.partial"   # a concurrent download
    orphan.write_bytes(b"half")
    live.write_bytes(b"half")
    load_weights(Tiny(), entry)
    assert not orphan.exists() and live.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([entry.filename, live.name])
