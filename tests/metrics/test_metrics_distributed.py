"""Two gloo processes each see half the data; after synchronize() every rank's scores equal a
single process's scores over all of it (with an image duplicated, as DistributedSampler pads)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vertebra.metrics import CocoEvaluator, SegmentationMetric, TopKAccuracy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scores(ann_file, predictions, seg_batches, cls_batches, sync):
    evaluator = CocoEvaluator(ann_file, ("bbox", "segm"))
    evaluator.update(predictions)
    segmentation, accuracy = SegmentationMetric(3), TopKAccuracy((1, 2))
    for pred, target in seg_batches:
        segmentation.update(pred, target)
    for logits, targets in cls_batches:
        accuracy.update(logits, targets)
    if sync:
        for metric in (evaluator, segmentation, accuracy):
            metric.synchronize()
    return {**evaluator.compute(), **segmentation.compute(), **accuracy.compute()}


def _worker(rank, port, ann_file, shards, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        queue.put((rank, _scores(ann_file, *shards[rank], sync=True)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(shapes_val, ground_truth, as_predictions):
    generator = torch.Generator().manual_seed(0)
    items = list(as_predictions(ground_truth, shift=3).items())
    seg = [(torch.randint(0, 3, (2, 8, 8), generator=generator), torch.randint(0, 3, (2, 8, 8), generator=generator))
           for _ in range(4)]
    cls = [(torch.randn(5, 4, generator=generator), torch.randint(0, 4, (5,), generator=generator)) for _ in range(4)]
    half = len(items) // 2
    shards = [(dict(items[:half + 1]), seg[:2], cls[:2]), (dict(items[half:]), seg[2:], cls[2:])]
    expected = _scores(shapes_val.ann_file, dict(items), seg, cls, sync=False)

    context = mp.get_context("fork")  # CPU only: no CUDA state to break, and no second torch import
    queue = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, shapes_val.ann_file, shards, queue))
                 for rank in range(2)]
    for process in processes:
        process.start()
    try:
        results = dict(queue.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
    finally:  # never leave a hung rank behind
        for process in processes:
            if process.is_alive():
                process.kill()
    per_class = expected.pop("per_class_iou")
    assert 0 < expected["AP"] < 1 and 0 < expected["mIoU"] < 1  # a non-trivial point to agree on
    for rank in (0, 1):
        assert results[rank].pop("per_class_iou") == pytest.approx(per_class)
        assert results[rank] == pytest.approx(expected)
