"""What a run keeps in its folder, and how it comes back: ``last.pth``, ``best.pth``, the artifact, resume.

:class:`RunFiles` is the half of the training loop's run (:class:`vertebra.engine.loop._Run`) that
reads and writes its folder; the loop itself only decides *when*.  It uses the run's ``config``,
``model``, ``ema``, ``optimizer``, ``scheduler``, ``scaler``, ``qat``, ``dist``, ``bundle``,
``spec``, ``history``, ``log``, ``out_dir`` and counters (``epoch``, ``step_in_epoch``,
``global_step``, ``running``), and its ``eval_model()`` / ``_record()``.

* ``last.pth``: everything a resume needs, written every epoch and when a signal stops the run;
* ``best.pth``: the evaluated weights alone, whenever the task's primary metric reaches a new best;
* ``model.safetensors``: the artifact ``vertebra predict`` reads (:data:`ARTIFACT_NAME`);
* a resume must use the config the run was started with, up to :data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import output_errors
from ..deploy.model import ARTIFACT_NAME
from ..errors import CheckpointError, ConfigError
from . import checkpoint as ckpt
from .config import config_to_dict, parse_config
from .distributed import all_gather_objects, barrier, sync_buffers

__all__ = ["RunFiles", "CHECKPOINT_NAME", "BEST_NAME", "BEST_FORMAT", "LOG_NAME", "RUN_OUTPUTS",
           "RESUME_MAY_CHANGE"]

CHECKPOINT_NAME = "last.pth"
BEST_NAME = "best.pth"
BEST_FORMAT = "vertebra-best-weights/1"
LOG_NAME = "metrics.jsonl"
#: Every file a run writes into its folder: what ``overwrite`` removes before a new run starts.
RUN_OUTPUTS = (CHECKPOINT_NAME, BEST_NAME, ARTIFACT_NAME, LOG_NAME, "curves.png", "predictions.png")
#: Config keys a resumed run may change: where and how fast it runs, how often it reports, and the
#: starting weights a resume does not read again; none of them changes the weights it reaches (the
#: data order and augmentation do not depend on workers).
RESUME_MAY_CHANGE = frozenset({"out", "device", "threads", "data.num_workers", "eval_every", "log_every",
                               "eval_batch_size", "init_weights", "finetune.weights"})


def _checksum(model: nn.Module) -> float:
    """A cheap fingerprint of the parameters (position-weighted sum), to show ranks stayed in sync."""
    with torch.no_grad():
        return float(sum((index + 1) * p.detach().double().abs().sum().item()
                         for index, p in enumerate(model.parameters())))


class RunFiles:
    """Checkpoints, best weights, artifact and resume of a training run (see the module doc)."""

    def state(self) -> dict[str, Any]:
        rng = all_gather_objects(ckpt.capture_rng())
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "running": {"loss_sums": dict(self.running["loss_sums"]), "images": self.running["images"],
                        "seconds": self.running["seconds"]},
            "rng": rng, "world_size": self.dist.world_size,
            "param_checksums": all_gather_objects(_checksum(self.model)),   # equal on every rank under DDP
            "config": config_to_dict(self.config),
            "model_config": getattr(self.model, "config", None),
            "history": self.history,
        }

    def save(self) -> None:
        sync_buffers(self.model)                  # rank 0's statistics: what every rank evaluates
        if self.ema is not None:
            sync_buffers(self.ema)
        state = self.state()                      # collective (gathers RNG states): every rank calls it
        if self.dist.is_main:
            ckpt.save_training_checkpoint(self.checkpoint_path, state)
            self.save_artifact()
        barrier()

    def save_artifact(self) -> None:
        """``OUT/model.safetensors``: the weights evaluation uses (the EMA's when the run averages, as
        its metrics are the EMA's), the class names of the data and the task's evaluation preprocessing."""
        from ..weights.artifact import save_artifact

        model = self.eval_model()
        last_eval = next((r for r in reversed(self.history) if r["kind"] == "eval"), {})
        metadata = {"source": "vertebra train", "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                    "ema": self.ema is not None,
                    "metrics": {k: v for k, v in last_eval.items() if k not in ("kind", "epoch")}}
        label_to_category = getattr(self.bundle.val, "label_to_category_id", None)
        # COCO ids of labels 1..K (index 0, background, has none): predict writes them in results.json
        category_ids = ([label_to_category.get(i) for i in range(len(self.bundle.class_names))]
                        if label_to_category else None)
        state, graph = self.qat.artifact_parts(model, self.epoch) if self.qat else (model.state_dict(), None)
        save_artifact(self.out_dir / ARTIFACT_NAME, state, task=self.config.task,
                      config=self.model.config, class_names=self.bundle.class_names,
                      preprocessing=self.spec.preprocessing(self.config.data), metadata=metadata,
                      category_ids=category_ids, graph=graph)

    def best_so_far(self) -> float | None:
        """The best primary metric the history holds (what ``best.pth`` was written for), or None."""
        name = self.spec.primary_metric
        values = [r[name] for r in self.history if r["kind"] == "eval" and isinstance(r.get(name), (int, float))]
        return max(values) if values else None

    def save_best(self, metrics: dict[str, float], previous: float | None) -> None:
        """``OUT/best.pth`` when the epoch just evaluated beats ``previous``: weights only (the ones
        evaluated), sealed with their digest; ``vertebra eval --checkpoint`` and ``init_weights`` read it."""
        name = self.spec.primary_metric
        value = metrics.get(name)
        if not self.dist.is_main or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if previous is not None and value <= previous:
            return
        from ..weights.digest import seal

        state = seal({"format": BEST_FORMAT, "model": self.eval_model().state_dict(), "epoch": self.epoch,
                      "metric": name, "value": float(value), "model_config": getattr(self.model, "config", None),
                      "ema": self.ema is not None})
        ckpt.save_atomic(state, self.out_dir / BEST_NAME)

    def resume(self, allow_changed: bool = False) -> None:
        path = self.checkpoint_path
        if not path.exists():
            raise CheckpointError(f"nothing to resume: {str(path)!r} does not exist; run without --resume "
                                  f"to start, or pass the --out folder of the run to continue")
        state = ckpt.load_training_checkpoint(path)
        ckpt.check_architecture(state, self.model, path)
        changes = self._config_changes(state["config"], path, allow_changed)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"{str(path)!r} was trained without EMA; resume with ema=null")
            ckpt.load_part(self.ema, state["ema"], "ema", path)
        for name, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler),
                             ("scaler", self.scaler if self.scaler.is_enabled() else None)):
            if target is not None and state.get(name) is not None:
                ckpt.load_part(target, state[name], name, path)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.running = state["running"]
        self.history = list(state.get("history", []))
        rng = state.get("rng") or []
        if state.get("world_size") == self.dist.world_size and len(rng) > self.dist.rank:
            ckpt.restore_rng(rng[self.dist.rank])
        else:
            warnings.warn(f"{str(path)!r} was written by {state.get('world_size')} process(es), this run has "
                          f"{self.dist.world_size}: training continues, but the data order and random "
                          f"augmentation differ from an uninterrupted run", stacklevel=2)
        if self.log is not None:          # the log is rewritten from the checkpoint's history
            with output_errors(self.log.path):
                self.log.rewrite(self.history)
        if changes:                       # allowed: the log says from where the config differs
            self._record({"kind": "config_change", "epoch": self.epoch, "changes": changes})

    def _config_changes(self, saved: dict, path: Path, allow_changed: bool) -> list[str]:
        """The differences from the checkpoint's config that change the result; refused unless allowed."""
        try:                              # keys added to the schema since: their defaults, not "new"
            saved = config_to_dict(parse_config(saved))
        except ConfigError:
            pass
        changes = [line for key, line in ckpt.config_diff(saved, config_to_dict(self.config))
                   if key not in RESUME_MAY_CHANGE]
        if not changes:
            return changes
        shown = "; ".join(changes[:8]) + ("; ..." if len(changes) > 8 else "")
        if not allow_changed:
            raise CheckpointError(f"{str(path)!r} was trained with another config ({shown}); resume with the "
                                  f"config it was started with (stored in the checkpoint), pass --allow-changed "
                                  f"to continue with the new values anyway, or start a new run in another --out")
        if self.dist.is_main:
            warnings.warn(f"resuming {str(path)!r} with a changed config ({shown}): the result will differ "
                          f"from an uninterrupted run", stacklevel=3)
        return changes
