"""What a run leaves behind for people: a JSON-lines log, a curves PNG, a predictions PNG, a table.

Only rank 0 calls these.  The curves are drawn with matplotlib (Agg backend, imported lazily);
predictions with ``torchvision.utils.draw_bounding_boxes`` / ``draw_segmentation_masks``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..atomic import atomic_open
from ..text import format_table

__all__ = ["JsonlLog", "read_jsonl", "plot_curves", "save_image_grid", "metrics_table", "KEY_METRICS"]


class JsonlLog:
    """Append one JSON object per line; every record gets flushed so a crash loses nothing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(_plain(record), sort_keys=False) + "\n")

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the whole log with ``records`` in one step (a resumed run's history): an
        interruption leaves the old log or the new one, never a truncated one."""
        with atomic_open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(_plain(record), sort_keys=False) + "\n" for record in records)


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)          # JSON has no nan/inf
    return value


#: Metrics worth a line in the curves PNG and the results tables, in display order.
KEY_METRICS = ("AP", "AP50", "AP75", "segm_AP", "segm_AP50", "mIoU", "pixel_acc", "top1", "top5")


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Training loss, learning rate and the key validation metrics against epochs, in one PNG.

    Uses the ``step`` records (every ``log_every`` steps) for loss and lr, and the per-epoch
    ``train`` means as markers; metrics come from the ``eval`` records.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = [r for r in history if r.get("kind") == "step"]
    train = [r for r in history if r.get("kind") == "train"]
    evals = [r for r in history if r.get("kind") == "eval"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    if steps:
        axes[0].plot([r["epoch"] for r in steps], [r["loss"] for r in steps], lw=1, alpha=0.6, label="loss (steps)")
        axes[1].plot([r["epoch"] for r in steps], [r["lr"] for r in steps], lw=1.5)
    axes[0].plot([r["epoch"] for r in train], [r["loss"] for r in train], marker="o", ms=4, lw=2,
                 label="loss (epoch mean)")
    if not steps:
        axes[1].plot([r["epoch"] for r in train], [r.get("lr", float("nan")) for r in train], marker="o", ms=3)
    positive = all(r["loss"] > 0 for r in steps + train if isinstance(r.get("loss"), (int, float)))
    axes[0].set(title="training loss", xlabel="epoch", yscale="log" if positive and train else "linear")
    axes[1].set(title="learning rate", xlabel="epoch")
    for key in KEY_METRICS:
        points = [(r["epoch"], r[key]) for r in evals if isinstance(r.get(key), (int, float)) and r[key] >= 0]
        if points:
            axes[2].plot(*zip(*points), marker="o", ms=4, label=key)
    axes[2].set(title="validation", xlabel="epoch", ylim=(0, 1))
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    try:
        with atomic_open(path, "wb") as handle:     # a reader never sees half a PNG
            figure.savefig(handle, dpi=100, format="png")
    finally:
        plt.close(figure)
    return path


def save_image_grid(images: Iterable[Tensor], path: str | Path, *, columns: int = 4) -> Path:
    """Save uint8 (3, H, W) images side by side (padded to the largest size) as one PNG."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = list(images)
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    padded = [torch.nn.functional.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
              for image in images]
    grid = make_grid(torch.stack(padded), nrow=min(columns, len(padded)), padding=4, pad_value=255)
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(handle, format="PNG")
    return path


def metrics_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Dict rows as the CLI's aligned table; floats with 3 decimals, missing cells as '-'."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    body = [[cell(row.get(column)) for column in columns] for row in rows]
    return format_table(body, list(columns), align="l" + "r" * (len(columns) - 1))
