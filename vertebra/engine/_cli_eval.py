"""``vertebra eval CONFIG --checkpoint PATH``: COCO AP / mIoU / top-k of a checkpoint on the val split."""

from __future__ import annotations

import argparse

from ._cli_train import add_common, is_main_process, load


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--checkpoint", required=True,
                        help="a last.pth written by 'vertebra train' (or a weights file for vertebra.weights)")
    parser.add_argument("--out", default=None, help="also draw predictions.png into this folder")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights even if EMA weights exist")


def run(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .report import metrics_table

    from .distributed import shutdown

    def show(metrics: dict) -> None:   # before predictions.png is written: a failed write keeps the numbers
        if is_main_process():
            print(metrics_table([{"metric": k, "value": v} for k, v in metrics.items()], ["metric", "value"]),
                  flush=True)

    config = load(args)
    try:
        evaluate(config, args.checkpoint, out_dir=args.out, use_ema=not args.no_ema, on_metrics=show)
    finally:
        shutdown()
    return 0
