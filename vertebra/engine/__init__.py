"""Training and evaluation: ``vertebra train``, ``vertebra eval`` and ``vertebra quickstart``.

- :func:`load_train_config` / :class:`TrainConfig`: the YAML schema (``config.py``), ``--set`` overrides.
- :func:`prepare_run`: the one set-up ``train`` and ``evaluate`` share; checks the whole config
  (model included, on the meta device) before any data is generated (``run.py``).
- :func:`train`: resumable, DDP-aware training loop writing checkpoints, a JSON-lines log and PNGs.
- :func:`evaluate`: COCO AP / mIoU / top-k of a checkpoint on the validation split.
- :data:`~vertebra.engine.tasks.TASKS`: the task table (data reader, loss, metric, drawing per task).

Names load on first use so ``import vertebra.engine`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "load_train_config": ".config",
    "parse_config": ".config",
    "prepare_run": ".run",
    "PreparedRun": ".run",
    "train": ".loop",
    "evaluate": ".evaluation",
    "RunResult": ".loop",
    "NonFiniteLossError": ".runtime",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig, load_train_config, parse_config
    from .evaluation import evaluate
    from .loop import RunResult, train
    from .run import PreparedRun, prepare_run
    from .runtime import NonFiniteLossError

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
