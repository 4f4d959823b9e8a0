"""torch.distributed, only as much as training needs: start from torchrun's env, shard, reduce.

Two launchers describe the processes in the environment, and :func:`launch_env` reads either:

* ``torchrun --nproc_per_node=N -m vertebra train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` (these win when both are present: torchrun
  inside a Slurm allocation);
* ``srun -m vertebra train`` (one task per GPU) sets ``SLURM_PROCID`` (rank), ``SLURM_NTASKS``
  (world size), ``SLURM_LOCALID`` (local rank) and ``SLURM_JOB_NODELIST`` / ``SLURM_NODELIST``; the
  first host of the node list (``node[01-04]`` -> ``node01``) is the master, on ``MASTER_PORT`` when
  set, else on a port derived from ``SLURM_JOB_ID`` so two jobs sharing a node do not collide.

:func:`init_from_env` starts a process group from it (gloo on CPU, nccl on CUDA).  Without those
variables everything here degrades to the single-process case, so the training loop has one code path.

:class:`EpochSampler` is the data order: a permutation that depends only on ``(seed, epoch)``,
padded to a multiple of the world size and sliced per rank (like ``DistributedSampler``), with a
``start`` offset so a run resumed in the middle of an epoch skips exactly the batches it already did.
:class:`SeededSamples` does the same for augmentation: sample ``i`` of epoch ``e`` gets the same random
flips and crops whichever worker process, rank or resumed run loads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError

__all__ = ["DistInfo", "LaunchEnv", "launch_env", "first_host", "init_from_env", "shutdown", "EpochSampler", "SeededSamples", "all_reduce_sum",
           "all_gather_objects", "broadcast_object", "barrier", "sync_buffers"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, draws and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher said about this process: who it is and where rank 0 listens."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    launcher: str = "none"           # "torchrun", "slurm" or "none"


#: First port of the range a Slurm job's master port is taken from (``+ SLURM_JOB_ID % 20000``).
SLURM_PORT_BASE = 29500


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """This process's place in the run, from torchrun's variables, else Slurm's, else a single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        return LaunchEnv(_int(env, "RANK", "0"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK", "0"),
                         env.get("MASTER_ADDR"), _int(env, "MASTER_PORT") if "MASTER_PORT" in env else None,
                         "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodes:
            raise ConfigError("srun set SLURM_PROCID but neither SLURM_JOB_NODELIST nor SLURM_NODELIST: cannot "
                              "tell which host is the master; set MASTER_ADDR, or launch with torchrun")
        port = (_int(env, "MASTER_PORT") if "MASTER_PORT" in env
                else SLURM_PORT_BASE + _int(env, "SLURM_JOB_ID", "0") % 20000)
        return LaunchEnv(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), _int(env, "SLURM_LOCALID", "0"),
                         env.get("MASTER_ADDR") or first_host(nodes), port, "slurm")
    return LaunchEnv()


def _int(env: Mapping[str, str], name: str, default: str | None = None) -> int:
    text = env.get(name, default)
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} must be an integer (set by torchrun or srun; "
                          f"unset it when launching a single process)") from None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``"node[01-04,07],gpu2"`` -> ``"node01"``, ``"a,b"`` -> ``"a"``.

    A bracket holds comma-separated numbers or ranges whose zero padding is kept; only the first
    name is needed (rank 0 runs on the allocation's first node), so the rest is not expanded.
    """
    text = nodelist.strip()
    depth, end = 0, len(text)
    for index, char in enumerate(text):     # the first comma outside brackets ends the first entry
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            end = index
            break
    entry = text[:end]
    prefix, bracket, rest = entry.partition("[")
    if not bracket:
        if not entry:
            raise ConfigError(f"cannot read a host from the Slurm node list {nodelist!r}")
        return entry
    body, closed, suffix = rest.partition("]")
    first = body.split(",")[0].split("-")[0]
    if not closed or not first.isdigit():
        raise ConfigError(f"cannot read a host from the Slurm node list {nodelist!r}; set MASTER_ADDR to the "
                          f"first node's name")
    return f"{prefix}{first}{suffix}"


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group the launcher describes (:func:`launch_env`; no-op for a single process)."""
    launch = launch_env()
    if launch.world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(launch.local_rank)
        if launch.launcher == "slurm":   # srun sets no MASTER_*: give the rendezvous explicitly
            dist.init_process_group(backend=backend, init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
                                    rank=launch.rank, world_size=launch.world_size)
        else:
            dist.init_process_group(backend=backend)
    return DistInfo(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (returns the tensor); identity for one process."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":   # NCCL reduces CUDA tensors only
            staged = tensor.cuda()
            dist.all_reduce(staged, op=dist.ReduceOp.SUM)
            tensor.copy_(staged.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a stop decision)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step every rank
    holds statistics updated from its own batch.  Evaluating (and checkpointing) after this call
    makes every rank score the exact model rank 0 saves.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        if dist.get_backend() == "nccl" and buffer.device.type != "cuda":
            staged = buffer.cuda()
            dist.broadcast(staged, src=src)
            buffer.copy_(staged.cpu())
        else:
            dist.broadcast(buffer, src=src)


class EpochSampler(Sampler[int]):
    """Indices for one rank; the order is a function of ``(seed, epoch)`` only.

    Call :meth:`set_epoch` before each epoch.  ``set_epoch(e, start=k)`` skips the first ``k``
    indices of this rank's share (``k = batches_done * batch_size``) when resuming mid-epoch.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.world_size > 1 and order:
            total = -(-self.size // self.world_size) * self.world_size
            order += order[: total - self.size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(len(self._indices()) - self.start, 0)


class SeededSamples(Dataset):
    """``dataset[i]`` with torch's RNG seeded from ``(seed, epoch, i)``: augmentation as a function of those only.

    Why: a DataLoader worker draws augmentation from its own RNG stream, so the flip a sample gets
    depends on which worker loads it and on what that worker loaded before.  A run resumed in the
    middle of an epoch, or run with another ``num_workers``, then augments differently and ends
    elsewhere.  Seeding per sample (inside ``fork_rng``, so the caller's own stream is left as it was)
    makes resume bit-exact with worker processes too, and results independent of ``num_workers``.
    ``transforms.v2`` draws only from torch's RNG; a dataset using Python's or NumPy's global RNG
    would need its own seeding.  Call :meth:`set_epoch` before creating each epoch's loader.
    """

    def __init__(self, dataset: Any, *, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also reseed every CUDA generator, which
            # fork_rng(devices=[]) does not restore, and so steer the training step's own randomness.
            torch.default_generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63)
            return self.dataset[index]
