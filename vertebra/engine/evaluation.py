"""Evaluation: metrics of a model or a checkpoint on the validation split, and the predictions PNG.

Shared by the training loop (after each epoch) and ``vertebra eval``.  Under DDP each rank scores
its shard of the validation split and the metric states are reduced (confusion matrices summed,
COCO detections gathered), so the numbers equal a single-process evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import CheckpointError, ConfigError
from . import checkpoint as ckpt
from .config import TrainConfig, parse_config
from .distributed import EpochSampler, barrier, init_from_env
from .report import save_image_grid
from .runtime import make_ema, resolve_device
from .tasks import DataBundle, Task, build_data, make_task, prepare_data

__all__ = ["build_model", "run_evaluation", "draw_predictions", "evaluate", "make_loader"]


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
    model = registry.build_from_config(model_config)
    if config.init_weights:
        from ..weights import load_weights

        load_weights(model, config.init_weights)
    return model


def make_loader(dataset: Any, sampler: EpochSampler, batch_size: int, bundle: DataBundle, workers: int,
                drop_last: bool, seed: int) -> DataLoader:
    """A loader whose order is the sampler's and whose worker seeds come from ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=bundle.collate,
                      num_workers=workers, drop_last=drop_last, generator=generator,
                      persistent_workers=False, pin_memory=False)


def run_evaluation(task: Task, model: nn.Module, bundle: DataBundle, sampler: EpochSampler,
                   config: TrainConfig) -> dict[str, float]:
    """Metrics of ``model`` on this rank's share of the val split, reduced over all ranks."""
    was_training = model.training
    model.eval()
    task.eval_reset()
    loader = make_loader(bundle.val, sampler, config.eval_batch_size or config.batch_size, bundle,
                         config.data.num_workers, False, config.seed)
    with torch.no_grad():
        for batch in loader:
            task.eval_update(model, batch)
    metrics = task.eval_compute()
    model.train(was_training)
    return metrics


def draw_predictions(task: Task, model: nn.Module, bundle: DataBundle, config: TrainConfig, path: Path,
                     limit: int = 8) -> Path:
    """The first ``limit`` validation images with the model's predictions, as one PNG grid."""
    loader = DataLoader(bundle.val, batch_size=min(limit, len(bundle.val)), shuffle=False,
                        collate_fn=bundle.collate)
    was_training = model.training
    model.eval()
    images = task.draw(model, next(iter(loader)), limit)
    model.train(was_training)
    wide = images[0].shape[-1] > 2 * images[0].shape[-2]     # multi-panel samples: fewer per row
    return save_image_grid(images, path, columns=2 if wide else 4)


def evaluate(config: TrainConfig | dict, checkpoint: str | Path, *, out_dir: str | Path | None = None,
             use_ema: bool = True) -> dict[str, float]:
    """Metrics of a checkpoint on the val split of ``config`` (EMA weights when the run kept them).

    ``checkpoint`` is a file written by :func:`train`; any other file is loaded with
    :func:`vertebra.weights.load_weights`.  With ``out_dir`` a ``predictions.png`` is drawn there.
    """
    if isinstance(config, dict):
        config = parse_config(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dist = init_from_env(resolve_device(config.device).type)
    device = resolve_device(config.device, dist.local_rank)
    path = Path(checkpoint)
    state = _read_any_checkpoint(path)                 # a missing or corrupt file fails before any work
    out = Path(out_dir or config.out or path.parent)   # where training generated its data
    if dist.is_main:
        prepare_data(config.task, config.data, out)
    barrier()
    bundle = build_data(config.task, config.data, out)
    model = build_model(config, bundle)
    if state is None:
        from ..weights import load_weights

        load_weights(model, path)
    else:
        ckpt.check_architecture(state, model, path)
        if use_ema and state.get("ema") is not None:
            ema = make_ema(model, 0.5)
            ema.load_state_dict(state["ema"])
            model = ema.module
        else:
            model.load_state_dict(state["model"])
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    task = make_task(config.task, bundle, device, config.channels_last)
    sampler = EpochSampler(len(bundle.val), shuffle=False, seed=config.seed, rank=dist.rank,
                           world_size=dist.world_size, pad=False)
    metrics = run_evaluation(task, model, bundle, sampler, config)
    if out_dir is not None and dist.is_main:
        draw_predictions(task, model, bundle, config, Path(out_dir) / "predictions.png")
    return metrics


def _read_any_checkpoint(path: Path) -> dict | None:
    """A training checkpoint's dict, or None when ``path`` is some other (weights) file."""
    from .checkpoint import load_checkpoint

    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass the last.pth a training run "
                              f"wrote (its --out folder)")
    if path.suffix == ".safetensors":
        return None
    state = load_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == ckpt.FORMAT:
        return state
    return None
