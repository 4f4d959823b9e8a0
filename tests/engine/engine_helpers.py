"""Tiny configs for engine tests: smallest backbone, 64 px images, a handful of samples."""

from __future__ import annotations

import copy
import os
import signal

import torch
from PIL import Image

SMALL = {"name": "mobilenet_v3_small"}

TINY = {
    "detection": {"task": "detection",
                  "model": {"head": "fasterrcnn_fpn", "backbone": SMALL, "min_size": 64, "max_size": 64,
                            "fpn_channels": 16, "box_batch_size_per_image": 16, "rpn_pre_nms_top_n_train": 50,
                            "rpn_post_nms_top_n_train": 20, "rpn_pre_nms_top_n_test": 20,
                            "rpn_post_nms_top_n_test": 10},
                  "data": {"num_train": 4, "num_val": 2, "image_size": 64, "size": None}},
    "instance": {"task": "instance",
                 "model": {"head": "maskrcnn_fpn", "backbone": SMALL, "min_size": 64, "max_size": 64,
                           "fpn_channels": 16, "box_batch_size_per_image": 16, "rpn_pre_nms_top_n_train": 50,
                           "rpn_post_nms_top_n_train": 20, "rpn_pre_nms_top_n_test": 20,
                           "rpn_post_nms_top_n_test": 10},
                 "data": {"num_train": 4, "num_val": 2, "image_size": 64, "size": None}},
    "semantic": {"task": "semantic", "model": {"head": "lraspp", "backbone": SMALL, "inter_channels": 16},
                 "data": {"num_train": 4, "num_val": 2, "image_size": 64, "size": 64}},
    "classification": {"task": "classification", "model": {"head": "classifier", "backbone": SMALL},
                       "data": {"format": "image_folder", "train_images": "train", "val_images": "val",
                                "size": 32}},
}
COMMON = {"epochs": 1, "batch_size": 2, "seed": 0, "optimizer": {"name": "sgd", "lr": 0.01},
          "schedule": {"warmup_epochs": 0}, "log_every": 1}


def tiny(task: str, **top) -> dict:
    config = copy.deepcopy({**COMMON, **TINY[task]})
    config.update(top)
    return config


def write_image_folder(root, classes: int = 3) -> None:
    """``classes`` colour classes (at most 3), 4 train / 2 val images each, 32 px: enough for ImageFolder + top-k."""
    generator = torch.Generator().manual_seed(0)
    colours = dict(list({"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items())[:classes])
    for split, count in (("train", 4), ("val", 2)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                noise = torch.randint(0, 40, (32, 32, 3), generator=generator)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{index}.png")


def training_state(**fields) -> dict:
    """A minimal but complete training-checkpoint state (every field of checkpoint.SCHEMA), with ``fields`` set."""
    from vertebra.engine import checkpoint as ckpt

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"model": model.state_dict(), "ema": None, "optimizer": optimizer.state_dict(),
             "scheduler": {"last_epoch": 0}, "scaler": None, "epoch": 1, "step_in_epoch": 0, "global_step": 3,
             "running": {"loss_sums": {}, "images": 0, "seconds": 0.0}, "rng": [ckpt.capture_rng()],
             "world_size": 1, "param_checksums": [0.0], "config": {}, "model_config": None, "history": []}
    state.update(fields)
    return state


def killed_mid_write(target) -> None:
    """Run an ``atomic_open`` write of ``target`` in a subprocess that dies (like SIGKILL) before renaming."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os
        from vertebra.atomic import atomic_open
        with atomic_open({str(target)!r}) as handle:
            handle.write(b"x" * 100000)
            handle.flush()
            os._exit(9)  # like SIGKILL: nothing after this runs
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()


def sigterm_at(epoch, step):
    """An ``on_step`` callback that sends this process SIGTERM after step ``step`` of epoch ``epoch``."""
    def on_step(current_epoch, current_step):
        if (current_epoch, current_step) == (epoch, step):
            os.kill(os.getpid(), signal.SIGTERM)
    return on_step
