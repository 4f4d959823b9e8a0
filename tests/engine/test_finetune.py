"""Fine-tuning from the config alone (issue 16, item 1): a 1000-class classifier into 2 classes, a
COCO-91 detector into the shapes set's 3 categories, an ImageNet classifier under a detector; the
report says what was loaded, re-initialised and dropped.  Checkpoints have random weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import mobilenet_v3_small
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra import load_model, registry
from vertebra.engine import parse_config, prepare_run, train
from vertebra.engine.finetune import apply_structure, load_start_weights
from vertebra.engine.report import read_jsonl
from vertebra.engine.runtime import StopSignal
from vertebra.errors import ConfigError, WeightsError

from engine_helpers import tiny, write_image_folder


def test_a_1000_class_classifier_becomes_a_2_class_one(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    source = registry.build_from_config({**tiny("classification")["model"], "num_classes": 1000})
    weights = {key: value.contiguous() for key, value in source.state_dict().items()}
    save_file(weights, str(tmp_path / "imagenet.safetensors"))
    write_image_folder(tmp_path, classes=2)
    monkeypatch.chdir(tmp_path)
    config = tiny("classification", max_steps_per_epoch=1,
                  finetune={"weights": "imagenet.safetensors", "frozen_stages": 2})
    result = train(config, out_dir=tmp_path / "run", progress=False)

    record = next(r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "finetune")
    assert record["reinitialised"] == {"head.classifier.3": 2}          # the 1000-way layer, weight + bias
    assert record["dropped"] == {"head.classifier.3": 2}
    assert sum(record["loaded"].values()) == len(weights) - 2 and "backbone.features.0.0" in record["loaded"]
    assert "re-initialised 2: head.classifier.3 (2)" in capsys.readouterr().out
    trained = result.model.state_dict()
    assert trained["head.classifier.3.weight"].shape[0] == 2
    frozen = [key for key in weights if key.startswith(("backbone.features.0.", "backbone.features.1."))]
    assert frozen and all(torch.equal(trained[key], weights[key]) for key in frozen)   # stem + stage 1 stay
    assert not torch.equal(trained["head.classifier.0.weight"], weights["head.classifier.0.weight"])  # trains


def test_a_coco_91_detector_becomes_a_3_category_one(tmp_path):
    torch.manual_seed(0)
    source = registry.build_from_config({**tiny("detection")["model"], "num_classes": 91})
    torch.save({"model": source.state_dict()}, tmp_path / "coco.pth")
    config = tiny("detection", max_steps_per_epoch=1,
                  finetune={"weights": str(tmp_path / "coco.pth"), "batchnorm": "frozen", "backbone_lr_mult": 0.1})
    result = train(config, out_dir=tmp_path / "run", progress=False)

    record = next(r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "finetune")
    assert record["reinitialised"] == {"roi_heads.box_predictor.cls_score": 2, "roi_heads.box_predictor.bbox_pred": 2}
    assert "roi_heads.box_predictor.cls_score.weight file [91, 1024] vs model [4, 1024]" in record["mismatched"]
    assert result.model.roi_heads.box_predictor.cls_score.out_features == 4          # 3 shapes + background
    assert any(isinstance(m, FrozenBatchNorm2d) for m in result.model.backbone.body.modules())
    groups = torch.load(tmp_path / "run" / "last.pth", weights_only=True)["optimizer"]["param_groups"]
    assert sorted({g["initial_lr"] for g in groups}) == pytest.approx([0.001, 0.01])    # backbone at 0.1x
    assert load_model(tmp_path / "run").roi_heads.box_predictor.cls_score.out_features == 4   # artifact loads


def test_an_imagenet_classifier_starts_a_detectors_backbone(tmp_path):
    torch.manual_seed(0)
    torch.save(mobilenet_v3_small(num_classes=1000).state_dict(), tmp_path / "tv.pth")   # torchvision names
    config = parse_config(tiny("detection", finetune={"weights": str(tmp_path / "tv.pth")}))
    model = registry.build_from_config({**config.model, "num_classes": 4})
    report = load_start_weights(model, config)
    assert report.target == "backbone.body" and "fine-tuning from" in report.lines()[0]
    assert set(report.dropped) == {"classifier.0", "classifier.3"}                      # the ImageNet head
    assert any(name.startswith("roi_heads") for name in report.reinitialised)
    assert not any(name.startswith("backbone.body") for name in report.reinitialised)


def test_bad_finetune_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="finetune.batchnorm: must be one of 'train', 'eval', 'frozen'"):
        parse_config(tiny("semantic", finetune={"batchnorm": "fixed"}))
    with pytest.raises(ConfigError, match="set one of init_weights"):
        parse_config(tiny("semantic", init_weights="a.pth", finetune={"weights": "b.pth"}))
    config = parse_config(tiny("semantic", finetune={"frozen_stages": 9}))
    model = registry.build_from_config({**config.model, "num_classes": 4})
    with pytest.raises(ConfigError, match="finetune.frozen_stages: this backbone has 5 stages, got 9"):
        apply_structure(model, config)
    torch.save({"unrelated.weight": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth"):
        load_start_weights(model, parse_config(tiny("semantic", finetune={"weights": str(tmp_path / "other.pth")})))


def test_batchnorm_eval_keeps_the_backbone_statistics_while_training(tmp_path):
    from vertebra.engine.loop import _Run

    config = parse_config(tiny("semantic", finetune={"batchnorm": "eval"}))
    run = _Run(prepare_run(config, tmp_path / "run"), progress=False, on_step=None)
    norms = [m for m in run.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    run.train_epoch(StopSignal())                         # an epoch in train mode ...
    assert run.model.training and norms and not any(m.training for m in norms)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))   # ... statistics unchanged
    head_norms = [m for m in run.model.classifier.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert head_norms and all(m.training for m in head_norms)                    # only the backbone's


def test_a_segmenters_run_starts_a_detectors_backbone(tmp_path):
    """The quickstart's route: LR-ASPP's backbone.* become the detector's backbone.body.*."""
    torch.manual_seed(0)
    segmenter = registry.build_from_config({**tiny("semantic")["model"], "num_classes": 4})
    save_file({k: v.contiguous() for k, v in segmenter.state_dict().items()}, str(tmp_path / "seg.safetensors"))
    config = parse_config(tiny("detection", finetune={"weights": str(tmp_path / "seg.safetensors")}))
    torch.manual_seed(1)
    model = registry.build_from_config({**config.model, "num_classes": 4})
    report = load_start_weights(model, config)
    assert report.target == "backbone.body"
    assert set(report.dropped) == {name for name in report.dropped if name.startswith("classifier")}  # LR-ASPP head
    assert not any(name.startswith("backbone.body") for name in report.reinitialised)
    own = model.backbone.body.state_dict()
    assert all(torch.equal(own[key[len("backbone."):]], value) for key, value in segmenter.state_dict().items()
               if key.startswith("backbone.") and "num_batches_tracked" not in key)
