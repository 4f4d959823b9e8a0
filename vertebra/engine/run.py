"""Setting up a run: the one path :func:`~vertebra.engine.train` and :func:`~vertebra.engine.evaluate` share.

:func:`prepare_run` goes from cheap to expensive so that a mistake costs as little as possible:

1. the whole config is checked (:func:`check_config`): the schema, the task name against the task
   table, and the ``model`` section, built through the registry on the ``meta`` device (every key,
   every option, the head/backbone contract; shapes only, no memory).  A typo anywhere fails in
   milliseconds with its dotted path (``model.backbone.output_strid``), before any data exists;
2. the checkpoint to evaluate, if any, is read (a missing or corrupt file fails before any work);
3. threads, the process group, the device and the seeds;
4. the data: the built-in shapes set generated on rank 0, then both splits read on every rank;
5. the task adapter and the real model, ``num_classes`` filled from the data, with the
   ``finetune`` section's frozen stages and BatchNorm mode, on the device.  Starting weights
   (``init_weights`` / ``finetune.weights``) are the training loop's to load: only a fresh run reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import output_errors
from ..errors import CheckpointError, ConfigError, VertebraError
from . import checkpoint as ckpt
from .config import TrainConfig, parse_config
from .data import DataBundle
from .distributed import DistInfo, barrier, init_from_env
from .finetune import apply_structure
from .runtime import resolve_device, seed_everything
from .qat import check_qat
from .tasks import Task, TaskSpec, task_spec

__all__ = ["PreparedRun", "prepare_run", "check_config", "build_model", "read_checkpoint"]

#: ``num_classes`` for the meta-device check when the config leaves it to the data (not read yet):
#: any valid count builds the same layers, only the classifier's width differs.
_PLACEHOLDER_CLASSES = 2


@dataclass
class PreparedRun:
    """What every run needs before it trains or evaluates anything."""

    config: TrainConfig
    out_dir: Path
    dist: DistInfo
    device: torch.device
    spec: TaskSpec
    bundle: DataBundle
    task: Task
    model: nn.Module                  # on ``device`` (channels_last when the config asks)
    state: dict | None = None         # the training checkpoint read for evaluation, if any
    eval_norms: list = field(default_factory=list)   # BatchNorms ``finetune.batchnorm: eval`` keeps in eval


def check_config(config: TrainConfig | dict) -> TrainConfig:
    """The config validated as a whole, model section included; raises before anything is built."""
    if isinstance(config, dict):
        config = parse_config(config)
    task_spec(config.task)
    _check_model(config.model)
    check_qat(config)
    return config


def _check_model(model_config: dict) -> None:
    """Build ``model_config`` on the meta device so the registry checks it without allocating weights."""
    from .. import registry

    model = {key: value for key, value in model_config.items() if key != "weights"}   # loaded by the real build
    model.setdefault("num_classes", _PLACEHOLDER_CLASSES)
    try:
        with torch.device("meta"):
            registry.build_from_config(model, path="model")
    except VertebraError:
        raise
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta: the real build checks it later
        pass


def prepare_run(config: TrainConfig | dict, out_dir: str | Path, *,
                checkpoint: str | Path | None = None) -> PreparedRun:
    """Check ``config``, then set up data, task adapter and model for a run in ``out_dir`` (see module doc).

    ``checkpoint``: a file the caller will load (``evaluate``): a training checkpoint comes back as
    :attr:`PreparedRun.state`, any other (weights) file as ``None``.
    """
    config = check_config(config)
    spec = task_spec(config.task)
    state = read_checkpoint(Path(checkpoint)) if checkpoint is not None else None
    out_dir = Path(out_dir)
    with output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dist = init_from_env(resolve_device(config.device).type)
    device = resolve_device(config.device, dist.local_rank)
    seed_everything(config.seed)
    if dist.is_main:
        with output_errors(out_dir):     # it writes the generated data set (shapes) into out_dir
            spec.prepare_data(config.data, out_dir)
    barrier()
    bundle = spec.build_data(config.data, out_dir)
    task = spec.make(bundle, device, config.channels_last)
    model = build_model(config, bundle)
    eval_norms = apply_structure(model, config)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return PreparedRun(config, out_dir, dist, device, spec, bundle, task, model, state, eval_norms)


def build_model(config: TrainConfig, bundle: DataBundle) -> nn.Module:
    """The registry model of ``config.model``; ``num_classes`` filled from the data when left out."""
    from .. import registry

    model_config = dict(config.model)
    if "num_classes" not in model_config:
        model_config["num_classes"] = bundle.num_classes
    elif isinstance(model_config["num_classes"], int) and model_config["num_classes"] < bundle.num_classes:
        raise ConfigError(f"the data has {bundle.num_classes} classes ({', '.join(bundle.class_names)}) but the "
                          f"model predicts {model_config['num_classes']}; remove model.num_classes to fill it "
                          f"from the data", path="model.num_classes")
    return registry.build_from_config(model_config)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A training checkpoint's dict, or None when ``path`` is some other (weights) file."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass the last.pth a training run "
                              f"wrote (its --out folder)")
    if path.suffix == ".safetensors":
        return None
    state = ckpt.load_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == ckpt.FORMAT:
        return state
    return None
