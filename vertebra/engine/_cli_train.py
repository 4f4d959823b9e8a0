"""``vertebra train CONFIG [--set key=value ...] [--out DIR] [--resume [--allow-changed] | --overwrite]``.

Works the same under ``torchrun --nproc_per_node=N -m vertebra train CONFIG`` and under
``srun python -m vertebra train CONFIG`` (DDP; only rank 0 prints, logs and checkpoints).  Exit status: 0 done, 2 a vertebra error (bad config, diverged
loss ...), 143 / 130 when SIGTERM / Ctrl-C stopped the run after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import sys

EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}


def add_common(parser: argparse.ArgumentParser) -> None:
    """Arguments ``train`` and ``eval`` share."""
    parser.add_argument("config", help="training config (YAML or JSON), e.g. configs/train/quickstart_detection.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted path; value parsed as YAML), e.g. "
                             "--set optimizer.lr=0.01 --set epochs=3; repeatable")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides the config)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (overrides the config); on a busy machine fewer threads than cores is faster")


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--out", default=None, help="output folder (default: the config's 'out', else runs/<head>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pth (same config) to the same result as an uninterrupted run")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an OUT that holds an earlier run (its outputs are removed first)")
    parser.add_argument("--allow-changed", action="store_true",
                        help="with --resume: continue although the config differs from the checkpoint's "
                             "(the differences are logged)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (e.g. in CI logs); the one line per epoch stays")


def load(args: argparse.Namespace):
    from .config import load_train_config

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    return load_train_config(args.config, overrides)


def is_main_process() -> bool:
    from .distributed import launch_env

    return launch_env().rank == 0


def run(args: argparse.Namespace) -> int:
    from .loop import train
    from .report import metrics_table

    from .distributed import shutdown

    config = load(args)
    try:
        result = train(config, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                       allow_changed=args.allow_changed, progress=not args.no_progress)
    finally:
        shutdown()                     # leave the process group cleanly under torchrun
    if not is_main_process():
        return 0
    if result.stopped_by is not None:
        print(f"stopped by {result.stopped_by} after {result.epochs_done} epoch(s); checkpoint: {result.checkpoint}\n"
              f"continue with: vertebra train {args.config} --out {result.out_dir} --resume", file=sys.stderr)
        return EXIT_CODES.get(result.stopped_by, 1)
    print(metrics_table([{"metric": k, "value": v} for k, v in result.metrics.items()], ["metric", "value"]))
    print(f"\nimages/s (training): {result.images_per_s:.1f}")
    print(f"outputs in {result.out_dir}: last.pth (resumable), model.safetensors (for vertebra predict), "
          f"metrics.jsonl"
          + "".join(f", {p.name}" for p in result.files.values()))
    return 0
