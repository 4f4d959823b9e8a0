"""The training and evaluation loops: one code path for CPU, CUDA, AMP, EMA and DDP.

``train(config)`` runs epochs of optimizer steps, evaluates, writes ``OUT/last.pth`` and the model
artifact ``OUT/model.safetensors`` (what ``vertebra predict`` and ``vertebra.load_model`` read) after
every epoch (and when SIGTERM / Ctrl-C arrives), ``OUT/best.pth`` (weights only) whenever the task's
primary metric (:attr:`TaskSpec.primary_metric`) reaches a new best, logs ``OUT/metrics.jsonl`` and
finally draws ``OUT/curves.png`` and ``OUT/predictions.png``.  The folder is claimed first
(:mod:`.rundir`): a used one is refused without ``resume`` / ``overwrite``, and a lock keeps a second
run out.  A resumed run must use the config it was started with, up to the settings that cannot
change its result (:data:`RESUME_MAY_CHANGE`); anything else is refused with the difference unless
``allow_changed``.  ``train(config, resume=True)`` continues from
``OUT/last.pth`` and reaches the same weights an uninterrupted run reaches: the data order is a
function of ``(seed, epoch)`` (:class:`EpochSampler`), each sample's augmentation a function of
``(seed, epoch, index)`` (:class:`SeededSamples`, so worker processes change nothing), the RNG
states of every rank are restored, and a run stopped mid-epoch skips exactly the batches it already did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ..atomic import check_output_folder, output_errors
from ..errors import ConfigError
from ..norms import set_batchnorm
from . import checkpoint as ckpt
from .config import TrainConfig, parse_config
from .data import make_loader
from .distributed import EpochSampler, SeededSamples, all_reduce_sum, barrier, launch_env, sync_buffers
from .evaluation import draw_predictions, run_evaluation
from .finetune import backbone_parameters, load_start_weights
from .optim import build_optimizer, build_scheduler
from .qat import QatRun
from .report import JsonlLog, plot_curves
from .run import PreparedRun, check_config, prepare_run
from .rundir import claim_run_folder, refuse_used_folder
from .saving import BEST_NAME, CHECKPOINT_NAME, LOG_NAME, RUN_OUTPUTS, RunFiles
from .runtime import NonFiniteLossError, StopSignal, amp_dtype, autocast_context, make_ema, make_scaler

__all__ = ["train", "RunResult"]

@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    out_dir: Path
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    images_per_s: float = 0.0
    epochs_done: int = 0
    stopped_by: str | None = None     # "SIGTERM" / "SIGINT" when a signal ended the run early
    files: dict[str, Path] = field(default_factory=dict)
    model: nn.Module | None = None    # the trained model (unwrapped; EMA weights live in the checkpoint)


class _Run(RunFiles):
    """State of one training run; ``train()`` is the public face."""

    def __init__(self, prepared: PreparedRun, *, progress: bool, on_step: Callable[[int, int], None] | None):
        config = self.config = prepared.config
        self.out_dir, self.progress, self.on_step = prepared.out_dir, progress, on_step
        self.dist, self.device, self.bundle, self.task = prepared.dist, prepared.device, prepared.bundle, prepared.task
        self.spec = prepared.spec
        self.model = prepared.model
        self.eval_norms = prepared.eval_norms
        if config.bn_momentum is not None:
            set_batchnorm(self.model, momentum=config.bn_momentum)  # a setting: state_dict unchanged
        self.qat = QatRun(self.model, config, self.bundle.train) if config.quantization.mode == "qat" else None
        if self.qat is not None:
            self.model = self.qat.model
        self.amp = amp_dtype(config.amp, self.device)
        self.scaler = make_scaler(self.amp, self.device)
        self.ema = make_ema(self.model, config.ema)
        self.optimizer = build_optimizer(self.model, config.optimizer, backbone=backbone_parameters(self.model),
                                         backbone_lr_mult=config.finetune.backbone_lr_mult)
        self.train_data = SeededSamples(self.bundle.train, seed=config.seed)
        self.train_sampler = EpochSampler(len(self.bundle.train), shuffle=True, seed=config.seed,
                                          rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = self._steps_per_epoch(len(self.train_sampler))
        self.scheduler = build_scheduler(self.optimizer, config.schedule, epochs=config.epochs,
                                         steps_per_epoch=self.steps_per_epoch)
        self.val_sampler = EpochSampler(len(self.bundle.val), shuffle=False, seed=config.seed,
                                        rank=self.dist.rank, world_size=self.dist.world_size, pad=False)
        self.train_module: nn.Module = self.model
        if self.dist.enabled:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.running = {"loss_sums": {}, "images": 0, "seconds": 0.0}
        self.history: list[dict] = []
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.log = JsonlLog(self.out_dir / LOG_NAME) if self.dist.is_main else None

    def _steps_per_epoch(self, per_rank: int) -> int:
        config = self.config
        steps = per_rank // config.batch_size
        if config.max_steps_per_epoch:
            steps = min(steps, config.max_steps_per_epoch)
        if steps == 0:
            raise ConfigError(f"batch_size {config.batch_size} is larger than the {per_rank} training images "
                              f"each of the {self.dist.world_size} process(es) gets; lower batch_size",
                              path="batch_size")
        return steps

    # -- one epoch -----------------------------------------------------------------------------
    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.log is not None:
            with output_errors(self.log.path):
                self.log.write(record)

    def train_epoch(self, stop: StopSignal) -> bool:
        """Run the rest of the current epoch; False when a signal stopped it (checkpoint written)."""
        batches = self._batches()
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                   disable=not (self.progress and self.dist.is_main))
        start = time.perf_counter()
        for _ in range(self.steps_per_epoch - self.step_in_epoch):
            names, values = self._step(next(batches), stop)
            self._account(names, values, time.perf_counter() - start, bar)
            if self.on_step is not None:
                self.on_step(self.epoch, self.step_in_epoch)
            if values[-1].item() > 0 and self.step_in_epoch < self.steps_per_epoch:   # a rank got a signal
                self.running["seconds"] += time.perf_counter() - start
                bar.close()
                self.save()
                return False
        bar.close()
        self.running["seconds"] += time.perf_counter() - start
        self._end_epoch()
        return True

    def _batches(self) -> Iterator[Any]:
        """This epoch's remaining batches: the order and the augmentation follow (seed, epoch) alone."""
        config = self.config
        self.train_module.train()
        for norm in self.eval_norms:          # finetune.batchnorm: eval
            norm.eval()
        if self.qat is not None:
            self.qat.on_train(self.epoch)
        self.train_sampler.set_epoch(self.epoch, start=self.step_in_epoch * config.batch_size)
        self.train_data.set_epoch(self.epoch)
        return iter(make_loader(self.train_data, self.train_sampler, config.batch_size, self.bundle,
                                config.data.num_workers, True, config.seed * 1000 + self.epoch))

    def _step(self, batch: Any, stop: StopSignal) -> tuple[list[str], torch.Tensor]:
        """One optimizer step.  Returns the loss names and, summed over ranks, their values followed
        by the number of images and the count of ranks that received a stop signal."""
        with autocast_context(self.amp, self.device):
            loss, parts, count = self.task.loss(self.train_module, batch)
        values = torch.stack([loss.detach().float(), *(v.float() for v in parts.values()),
                              torch.tensor(float(count), device=loss.device),
                              torch.tensor(float(stop.received is not None), device=loss.device)])
        values = all_reduce_sum(values.cpu().double())   # every rank decides alike (diverged, stop)
        if not math.isfinite(values[0].item()):
            self._diverged(values[0].item())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step_in_epoch += 1
        self.global_step += 1
        return ["loss", *parts], values

    def _account(self, names: list[str], values: torch.Tensor, elapsed: float, bar: Any) -> None:
        """Add a step's losses and images to the running epoch totals; show and log them."""
        world = self.dist.world_size
        sums = self.running["loss_sums"]
        for key, value in zip(names, values[:-2].tolist()):
            sums[key] = sums.get(key, 0.0) + value / world
        self.running["images"] += int(values[-2].item())
        rate = self.running["images"] / max(self.running["seconds"] + elapsed, 1e-9)
        bar.set_postfix(loss=f"{values[0].item() / world:.3f}", img_s=f"{rate:.1f}")
        if self.global_step % self.config.log_every == 0:
            self._record({"kind": "step", "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                          "step": self.global_step, "loss": values[0].item() / world,
                          "lr": self.optimizer.param_groups[0]["lr"]})
        bar.update(1)

    def _end_epoch(self) -> None:
        """Log the epoch's mean losses and throughput, then move to the next epoch."""
        steps = self.steps_per_epoch
        self._record({"kind": "train", "epoch": self.epoch + 1, "step": self.global_step,
                      "lr": self.optimizer.param_groups[0]["lr"],
                      **{k: v / steps for k, v in self.running["loss_sums"].items()},
                      "images_per_s": self.running["images"] / max(self.running["seconds"], 1e-9),
                      "seconds": self.running["seconds"]})
        self.epoch += 1
        self.step_in_epoch = 0
        self.running = {"loss_sums": {}, "images": 0, "seconds": 0.0}

    def _diverged(self, value: float) -> None:
        kept = (f"the last good checkpoint {str(self.checkpoint_path)!r} (after epoch {self._saved_epoch()}) "
                f"was kept") if self.checkpoint_path.exists() else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"the training loss became {value} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; "
            f"stopped. {kept}. Lower optimizer.lr, add warmup (schedule.warmup_epochs) or set clip_grad_norm")

    def _saved_epoch(self) -> Any:
        try:
            return ckpt.load_training_checkpoint(self.checkpoint_path)["epoch"]
        except Exception:  # only for the message
            return "?"

    # -- evaluation ----------------------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def evaluate_epoch(self) -> dict[str, float]:
        """Evaluate the epoch just trained and log it; a failing evaluation (bad data, a metric's bug,
        Ctrl-C) first saves the trained epoch, so ``--resume`` never repeats it."""
        try:
            metrics = self.evaluate()
        except BaseException:
            self.save()
            raise
        self._record({"kind": "eval", "epoch": self.epoch, **metrics})
        return metrics

    def evaluate(self) -> dict[str, float]:
        sync_buffers(self.model)
        if self.ema is not None:
            sync_buffers(self.ema)
        return run_evaluation(self.task, self.eval_model(), self.bundle, self.val_sampler, self.config)


def train(config: TrainConfig | dict, *, out_dir: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, allow_changed: bool = False, progress: bool = True,
          on_step: Callable[[int, int], None] | None = None) -> RunResult:
    """Train ``config`` into ``out_dir`` (default ``config.out`` or ``runs/<head>``); see the module doc.

    ``resume`` continues the run in ``out_dir``; ``overwrite`` starts a new run there even though an
    earlier one left its files (they are removed first); ``allow_changed`` lets a resumed run use a
    config that differs from the checkpoint's.  ``progress=False`` hides the progress bars, never
    the one summary line per epoch.  ``on_step(epoch, step_in_epoch)`` is called after every
    optimizer step (tests use it to send a signal at a chosen moment).  Raises
    :class:`NonFiniteLossError` when the loss diverges, :class:`~vertebra.errors.OutputError` when
    the folder is another run's or in use.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: pass one of them")
    if allow_changed and not resume:
        raise ConfigError("--allow-changed only applies with --resume (it lets a resumed run change its config)")
    if isinstance(config, dict):
        config = parse_config(config)
    out = Path(out_dir or config.out or Path("runs") / str(config.model.get("head", "run")))
    config = dataclasses.replace(config, out=str(out))
    check_output_folder(out, probe=True)      # a read-only or misplaced --out fails now, not after an epoch
    check_config(config)                      # a refused config leaves no folder (nor lock) behind
    if launch_env().rank == 0:                # rank 0 alone writes there
        claim = claim_run_folder(out, RUN_OUTPUTS, resume=resume, overwrite=overwrite)
    else:
        refuse_used_folder(out, resume=resume, overwrite=overwrite)
        claim = contextlib.nullcontext()
    with claim:
        prepared = prepare_run(config, out)
        start = None if resume else load_start_weights(prepared.model, config)   # before EMA / QAT copy it
        run = _Run(prepared, progress=progress, on_step=on_step)
        if resume:
            run.resume(allow_changed)
        elif start is not None:
            run._record(start.record())
            if run.dist.is_main:
                tqdm.write("\n".join(start.lines()))
        return _train(run, config, out)


def _train(run: _Run, config: TrainConfig, out: Path) -> RunResult:
    stop = StopSignal()
    best = run.best_so_far()
    with stop.installed():
        while run.epoch < config.epochs:
            if not run.train_epoch(stop):
                return RunResult(out, {}, run.history, run.checkpoint_path, epochs_done=run.epoch,
                                 stopped_by=stop.received, model=run.model)
            last = run.epoch == config.epochs
            metrics = {}
            if last or run.epoch % config.eval_every == 0:
                metrics = run.evaluate_epoch()
            run.save()
            if metrics:
                run.save_best(metrics, best)
                best = run.best_so_far()
            if run.dist.is_main:
                _print_epoch(run.history, metrics, config.epochs)
            if _agreed(stop.received is not None) and not last:
                return RunResult(out, {}, run.history, run.checkpoint_path, epochs_done=run.epoch,
                                 stopped_by=stop.received, model=run.model)
    final = next((r for r in reversed(run.history) if r["kind"] == "eval"), {})
    metrics = {k: v for k, v in final.items() if k not in ("kind", "epoch")}
    rates = [r["images_per_s"] for r in run.history if r["kind"] == "train"]
    result = RunResult(out, metrics, run.history, run.checkpoint_path, model=run.model,
                       images_per_s=sum(rates) / len(rates) if rates else 0.0, epochs_done=run.epoch)
    if run.dist.is_main:
        title = f"{config.model.get('head')} on {_backbone_name(config.model)} ({config.task})"
        with output_errors(out / "curves.png"):
            result.files["curves"] = plot_curves(run.history, out / "curves.png", title=title)
        result.files["predictions"] = draw_predictions(run.task, run.eval_model(), run.bundle, config,
                                                        out / "predictions.png")
        if (out / BEST_NAME).exists():
            result.files["best"] = out / BEST_NAME
    barrier()
    return result


def _print_epoch(history: list[dict], metrics: dict[str, float], epochs: int) -> None:
    """One line per epoch (the progress bar itself disappears): loss, throughput, key metrics."""
    from .report import KEY_METRICS

    record = next(r for r in reversed(history) if r["kind"] == "train")
    shown = "  ".join(f"{k} {metrics[k]:.3f}" for k in KEY_METRICS if k in metrics and metrics[k] >= 0)
    tqdm.write(f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.3f}  {record['images_per_s']:.1f} img/s  "
               f"{record['seconds']:.0f} s" + (f"  |  {shown}" if shown else ""))


def _agreed(flag: bool) -> bool:
    """True on every rank when any rank has the flag (so all ranks stop together)."""
    return all_reduce_sum(torch.tensor([float(flag)], dtype=torch.float64))[0].item() > 0


def _backbone_name(model_config: dict) -> str:
    backbone = model_config.get("backbone")
    return backbone.get("name", "?") if isinstance(backbone, dict) else str(backbone)
