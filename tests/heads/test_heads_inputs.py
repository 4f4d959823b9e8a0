"""Every model that takes images refuses a wrong input with an InputError that says what to pass.

One table of input kinds x one model of each kind of forward (a backbone, the classifier, the
torchvision dense heads, an smp decoder, a detector), all on mobilenet_v3_small at 64 px; the
check itself is ``vertebra.inputs``.  Good inputs still run, and a refused meta input leaves the
model working.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vertebra import registry
from vertebra.errors import InputError
from vertebra.features import FeatureInfo, FeatureSpec
from vertebra.heads.classifier import classifier

SIZE = 64
BATCH_MODELS = ["backbone", "classifier", "lraspp", "deeplabv3", "unet"]
DETECTORS = ["fasterrcnn_fpn"]
MODELS = BATCH_MODELS + DETECTORS


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "backbone":
        return registry.build_backbone("mobilenet_v3_small").eval()
    kwargs = {"num_classes": 3}
    if name.endswith("_fpn"):
        kwargs.update(min_size=SIZE, max_size=96, box_detections_per_img=10)
    return registry.build(name, backbone="mobilenet_v3_small", **kwargs).eval()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: _build(name) for name in MODELS}


def _batch(channels: int = 3, dtype: torch.dtype = torch.float32, **kwargs) -> torch.Tensor:
    return torch.rand(1, channels, SIZE, SIZE, **kwargs).to(dtype)


def _poisoned(value: float) -> torch.Tensor:
    x = _batch()
    x[0, 1, 5, 7] = value
    return x


# kind -> (the bad batch, a fragment every model's message contains)
BAD = {
    "numpy": (lambda: np.zeros((1, 3, SIZE, SIZE), np.float32), r"numpy.ndarray.*torch.from_numpy\(x\)"),
    "none": (lambda: None, r"expected a torch.Tensor, got None"),
    "uint8": (lambda: _batch(dtype=torch.uint8), r"torch.uint8.*x.float\(\) / 255"),
    "int64": (lambda: _batch(dtype=torch.int64), r"torch.int64.*x.float\(\) / 255"),
    "float16": (lambda: _batch(dtype=torch.float16), r"torch.float16 but the model's parameters are torch.float32; "
                                                    r"pass x.float\(\), or convert the model with model.half\(\)"),
    "bfloat16": (lambda: _batch(dtype=torch.bfloat16), r"torch.bfloat16 but .* torch.float32.*model.bfloat16\(\)"),
    "float64": (lambda: _batch(dtype=torch.float64), r"torch.float64 but the model's parameters are torch.float32"),
    "gray": (lambda: _batch(1), r"expected 3 (input )?channels, got 1.*not broadcast.*x.expand\("),
    "nan": (lambda: _poisoned(float("nan")), r"1 non-finite value\(s\) \(1 NaN, 0 infinite\)"),
    "inf": (lambda: _poisoned(float("-inf")), r"1 non-finite value\(s\) \(0 NaN, 1 infinite\)"),
    "meta": (lambda: _batch(device="meta"), r"on meta but the model's parameters are on cpu"),
}


def _as_call(name: str, x):
    """A detector takes a list of (3, H, W) images; the others the batch itself."""
    if name in DETECTORS and isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 4:
        return list(x)
    return x


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("name", MODELS)
def test_bad_input_is_an_input_error_that_says_what_to_pass(models, name, kind):
    make, match = BAD[kind]
    with torch.no_grad(), pytest.raises(InputError, match=match):
        models[name](_as_call(name, make()))


@pytest.mark.parametrize("name", BATCH_MODELS)
def test_batch_models_name_the_batch_fixes(models, name):
    model = models[name]
    with pytest.raises(InputError, match=r"torch.stack\(images\)"):
        model([torch.rand(3, SIZE, SIZE)])
    with pytest.raises(InputError, match=r"x.unsqueeze\(0\)"):
        model(torch.rand(3, SIZE, SIZE))


@pytest.mark.parametrize("name", MODELS)
def test_good_input_runs_and_a_meta_input_leaves_the_model_working(models, name):
    model = models[name]
    with torch.no_grad():
        before = model(_as_call(name, _batch()))
        with pytest.raises(InputError):
            model(_as_call(name, _batch(device="meta")))
        after = model(_as_call(name, _batch()))
    assert type(after) is type(before)


def test_a_bfloat16_model_takes_bfloat16_and_autocast_takes_any_float(models):
    model = _build("classifier").bfloat16()
    with torch.no_grad():
        assert model(_batch(dtype=torch.bfloat16)).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert models["classifier"](_batch(dtype=torch.bfloat16)).shape == (1, 3)


class _PluginBackbone(torch.nn.Module):
    """A third-party backbone: the feature contract only, no input check of its own."""

    feature_info = FeatureInfo([FeatureSpec("C5", 8, 32)])

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 32, stride=32)

    def forward(self, x):
        return {"C5": self.conv(x)}


@pytest.mark.parametrize("kind", ["none", "uint8", "float64", "gray", "nan", "meta"])
def test_heads_check_inputs_themselves_for_a_plugin_backbone(kind):
    model = classifier(_PluginBackbone(), num_classes=2).eval()
    make, match = BAD[kind]
    with torch.no_grad(), pytest.raises(InputError, match=match):
        model(make())
    assert model(_batch()).shape == (1, 2)


def test_detector_input_rules(models):
    model = models["fasterrcnn_fpn"]
    image = torch.rand(3, SIZE, SIZE)
    with torch.no_grad():
        with pytest.raises(InputError, match=r"empty list of images; pass at least one image shaped \(3, H, W\)"):
            model([])
        with pytest.raises(InputError, match=r"3 dimension.*pass \[image\]"):
            model(image)
        with pytest.raises(InputError, match=r"image 1: expected an image shaped \(3, H, W\).*2 dimension.*"
                                             r"x.unsqueeze\(0\).expand\(3, -1, -1\)"):
            model([image, image[0]])
        with pytest.raises(InputError, match=r"image 0: expected 3 channels, got 1.*x.expand\(3, -1, -1\)"):
            model([image[:1]])
        with pytest.raises(InputError, match=r"image 0: .*numpy.ndarray"):
            model([np.zeros((SIZE, SIZE, 3), np.uint8)])
        with pytest.raises(InputError, match=r"got None; pass a list of float tensors shaped \(3, H, W\)"):
            model(None)
        with pytest.raises(InputError, match=r"numpy.ndarray; convert it: \[torch.from_numpy\(x\)"):
            model(np.zeros((SIZE, SIZE, 3), np.uint8))
        with pytest.raises(InputError, match="has no pixels"):
            model([torch.rand(3, 0, SIZE)])
        assert len(model(torch.rand(2, 3, SIZE, SIZE))) == 2  # a 4-D batch is a list of images
    model.train()
    try:
        with pytest.raises(InputError, match=r"train\(\) mode needs targets"):
            model([image])
        with pytest.raises(InputError, match=r"one target dict per image \(2\), got 1"):
            model([image, image], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    finally:
        model.eval()


def test_detector_refuses_an_image_its_resize_would_flatten(models):
    model = models["fasterrcnn_fpn"]  # max_size=96
    with torch.no_grad():
        with pytest.raises(InputError, match=r"image 0 is 16x2048: .*max_size=96, which leaves the shorter side 0 px; "
                                             r"a side may be at most 96 times the other"):
            model([torch.rand(3, 16, 2048)])
        assert len(model([torch.rand(3, 16, 1536)])) == 1  # exactly 96:1 still resizes to 1 px


def test_a_meta_call_does_not_move_the_anchors(models):
    """Even where the input check does not run (e.g. calling the RPN's anchor generator directly)."""
    model = models["fasterrcnn_fpn"]
    generator = model.rpn.anchor_generator
    with torch.no_grad():
        images = model.transform([torch.rand(3, SIZE, SIZE)])[0]
        features = list(model.backbone(images.tensors).values())
        expected = generator(images, features)
        meta_images = type(images)(images.tensors.to("meta"), images.image_sizes)
        generator(meta_images, [f.to("meta") for f in features])
        for got, want in zip(generator(images, features), expected):
            torch.testing.assert_close(got, want)


def test_maskrcnn_checks_its_images_too():
    model = registry.build("maskrcnn_fpn", backbone="mobilenet_v3_small", num_classes=3, min_size=SIZE,
                           max_size=96).eval()
    with torch.no_grad(), pytest.raises(InputError, match=r"image 0: expected 3 channels, got 1.*x.expand"):
        model([torch.rand(1, SIZE, SIZE)])
