"""Evaluation: metrics of a model or a checkpoint on the validation split, and the predictions PNG.

Shared by the training loop (after each epoch) and ``vertebra eval``.  Under DDP each rank scores
its shard of the validation split and the metric states are reduced (confusion matrices summed,
COCO detections gathered), so the numbers equal a single-process evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..atomic import check_output_folder, output_errors
from . import checkpoint as ckpt
from .config import TrainConfig, parse_config
from .data import DataBundle, make_loader
from .distributed import EpochSampler
from .report import save_image_grid
from .run import prepare_run
from .runtime import make_ema
from .tasks import Task

__all__ = ["run_evaluation", "draw_predictions", "evaluate"]


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
    with output_errors(path):
        return save_image_grid(images, path, columns=2 if wide else 4)


def evaluate(config: TrainConfig | dict, checkpoint: str | Path, *, out_dir: str | Path | None = None,
             use_ema: bool = True,
             on_metrics: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Metrics of a checkpoint on the val split of ``config`` (EMA weights when the run kept them).

    ``checkpoint`` is a file written by :func:`train`; any other file is loaded with
    :func:`vertebra.weights.load_weights`.  With ``out_dir`` a ``predictions.png`` is drawn there.
    ``on_metrics`` gets the metrics as soon as they exist, before anything is written, so a
    failing write (an :class:`~vertebra.errors.OutputError`) never costs the numbers.
    """
    if isinstance(config, dict):
        config = parse_config(config)
    path = Path(checkpoint)
    out = check_output_folder(out_dir or config.out or path.parent)   # where training generated its data
    run = prepare_run(config, out, checkpoint=path)
    model = run.model
    if run.state is None:
        from ..weights import load_weights

        load_weights(model, path)
    else:
        ckpt.check_architecture(run.state, model, path)
        if use_ema and run.state.get("ema") is not None:
            ema = make_ema(model, 0.5)
            ckpt.load_part(ema, run.state["ema"], "ema", path)
            model = ema.module
        else:
            model.load_state_dict(run.state["model"])
    sampler = EpochSampler(len(run.bundle.val), shuffle=False, seed=config.seed, rank=run.dist.rank,
                           world_size=run.dist.world_size, pad=False)
    metrics = run_evaluation(run.task, model, run.bundle, sampler, run.config)
    if on_metrics is not None:
        on_metrics(metrics)
    if out_dir is not None and run.dist.is_main:
        draw_predictions(run.task, model, run.bundle, run.config, Path(out_dir) / "predictions.png")
    return metrics
