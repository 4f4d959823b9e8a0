"""DDP for real: two gloo processes under torchrun, and the sampler that makes resuming exact."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from vertebra.engine import evaluate
from torch.utils.data import DataLoader

from vertebra.engine.distributed import (SLURM_PORT_BASE, EpochSampler, LaunchEnv, SeededSamples, first_host,
                                         launch_env)
from vertebra.errors import ConfigError
from vertebra.engine.report import read_jsonl

from engine_helpers import tiny


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    a = EpochSampler(10, shuffle=True, seed=1)
    b = EpochSampler(10, shuffle=True, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(4)
    assert list(a) != list(b)
    a.set_epoch(3, start=4)                   # resuming mid-epoch skips what was done
    full = EpochSampler(10, shuffle=True, seed=1)
    full.set_epoch(3)
    assert list(a) == list(full)[4:] and len(a) == 6


class _RandomDraws:
    """A 'dataset' whose samples are pure augmentation randomness: a fresh draw from torch's RNG."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.rand(3)


def test_seeded_samples_draw_by_seed_epoch_and_index_whoever_loads_them(monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    data = SeededSamples(_RandomDraws(), seed=1)
    data.set_epoch(2)
    forward = [data[i] for i in range(8)]
    torch.default_generator.manual_seed(123)  # the caller's RNG state does not matter ...
    state = torch.get_rng_state()
    backward = [data[i] for i in reversed(range(8))][::-1]
    assert torch.equal(torch.get_rng_state(), state)  # ... and is left as it was
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert len({tuple(x.tolist()) for x in forward}) == 8  # every index its own draw
    data.set_epoch(3)
    assert not torch.equal(data[0], forward[0])  # a new epoch, new augmentation
    data.set_epoch(2)
    order = EpochSampler(8, shuffle=True, seed=1)
    order.set_epoch(2)
    by_workers = torch.cat(list(DataLoader(data, batch_size=2, sampler=order, num_workers=2)))
    in_process = torch.cat(list(DataLoader(data, batch_size=2, sampler=order, num_workers=0)))
    assert torch.equal(by_workers, in_process)
    assert torch.equal(in_process, torch.stack([forward[i] for i in order]))
    assert reseeded == []  # CUDA generators (the training step's dropout on a GPU) are left alone


def test_epoch_sampler_shards_ranks_without_overlap():
    shards = [EpochSampler(7, shuffle=True, seed=0, rank=r, world_size=2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(1)
    assert len(shards[0]) == len(shards[1]) == 4                        # padded to equal length
    assert set(shards[0]) | set(shards[1]) == set(range(7))
    val = [EpochSampler(7, shuffle=False, seed=0, rank=r, world_size=2, pad=False) for r in range(2)]
    assert sorted(list(val[0]) + list(val[1])) == list(range(7))        # eval: every image exactly once


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    config = tiny("semantic", epochs=1, batch_size=2, optimizer={"name": "sgd", "lr": 0.2}, device="cpu")
    config["data"].update(num_train=8, num_val=5)        # 2 steps per rank; val split 3 + 2 over the ranks
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vertebra", "train", str(path), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("pixel_acc") == 2            # only rank 0 prints: its epoch line and its table

    state = torch.load(out / "last.pth", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2       # every rank's RNG is kept
    first, second = state["param_checksums"]
    assert first == second                                            # DDP kept the ranks' weights equal
    assert state["global_step"] == 2                                  # 8 images / 2 ranks / batch 2
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["kind"] for r in records].count("eval") == 1           # one writer: rank 0
    assert records[-1]["kind"] == "eval"

    # The metric reduced over both ranks' shards equals a single-process evaluation of the
    # checkpoint: ranks held identical weights (DDP) and the confusion matrices were summed.
    torch.set_num_threads(1)
    single = evaluate(config, out / "last.pth")
    assert {k: records[-1][k] for k in single} == pytest.approx(single)


@pytest.mark.parametrize("nodelist, first", [("node[01-04]", "node01"), ("gpu[7,9-12],cpu3", "gpu7"),
                                             ("a-b[003-004]-ib,c", "a-b003-ib"), ("host1,host2", "host1"),
                                             ("solo", "solo")])
def test_first_host_of_a_slurm_nodelist(nodelist, first):
    assert first_host(nodelist) == first


def test_launch_env_reads_torchrun_then_slurm_then_nothing():
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "node[01-02]",
             "SLURM_JOB_ID": "4242"}
    env = launch_env(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (3, 8, 1, "node01", "slurm")
    assert env.master_port == SLURM_PORT_BASE + 4242 and launch_env({**slurm, "MASTER_PORT": "1234"}).master_port == 1234
    assert launch_env({**slurm, "SLURM_JOB_NODELIST": "", "SLURM_NODELIST": "n5"}).master_addr == "n5"
    torchrun = launch_env({**slurm, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})   # torchrun inside Slurm
    assert (torchrun.rank, torchrun.world_size, torchrun.launcher) == (1, 2, "torchrun")
    assert launch_env({}) == LaunchEnv()
    with pytest.raises(ConfigError, match="SLURM_PROCID='x' must be an integer"):
        launch_env({**slurm, "SLURM_PROCID": "x"})
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST nor SLURM_NODELIST"):
        launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


_RANK_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from vertebra.engine import train
from vertebra.engine.distributed import shutdown
config = json.loads(sys.argv[1])
result = train(config, out_dir=sys.argv[2], progress=False)
shutdown()
print("METRICS " + json.dumps(result.metrics, sort_keys=True))
"""


@pytest.mark.slow
def test_srun_two_tasks_gloo(tmp_path):
    """Two processes given only what srun sets (SLURM_PROCID / NTASKS / LOCALID / JOB_NODELIST) train as
    one DDP run: equal weights on both ranks and the same reduced metrics on each."""
    import json
    import socket

    config = tiny("semantic", epochs=1, batch_size=1, optimizer={"name": "sgd", "lr": 0.2}, device="cpu")
    config["data"].update(num_train=4, num_val=3)            # 2 steps per rank; val split 2 + 1 over the ranks
    with socket.socket() as probe:                       # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    out = tmp_path / "run"
    ranks = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, json.dumps(config), str(out)],
                              env={**base, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "SLURM_PROCID": str(rank),
                                   "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank), "SLURM_JOB_ID": "7",
                                   "SLURM_JOB_NODELIST": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(o[1][-3000:] for o in outputs)
    metrics = [json.loads(next(line for line in o[0].splitlines() if line.startswith("METRICS "))[8:]) for o in outputs]
    assert metrics[0] == metrics[1] and "mIoU" in metrics[0]           # reduced over both ranks, on each
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["world_size"] == 2 and state["param_checksums"][0] == state["param_checksums"][1]
    assert state["global_step"] == 2                                   # 4 images / 2 ranks / batch 1
