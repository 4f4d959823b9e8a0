"""torchvision's Faster R-CNN / Mask R-CNN as one exportable graph: one image in, fixed-structure tensors out.

``torch.export`` and the dynamo ONNX exporter fail on torchvision's detectors, and the legacy
exporter bakes the input size in, because the eager model's Python makes decisions on values the
tracer cannot see: the resize scale is read back with ``.item()`` into a float, ``batched_nms``
branches on how many boxes survived, the RoI pooler infers its scales from concrete sizes, and the
mask paste loops over detections in Python.  :class:`ExportableDetector` runs *the model's own
modules* (transform constants, backbone + FPN, RPN head, anchor generator, box coder, RoI heads and
predictors, ``torchvision.ops.batched_nms``'s coordinate trick, ``roi_align``) in the same order,
with those decisions restated as tensor ops:

* resize: the scale and the resized size are computed in float64 tensors, the arithmetic eager
  does in Python floats, and the size becomes an unbacked integer (``.item()`` plus
  ``torch._check``): one export serves every input size with no guards on it, and the rounding
  equals eager's (a float32 scale lands one pixel short for many sizes);
* NMS: torchvision's fake kernel claims at least two boxes survive (so 0 or 1 detection failed a
  run-time assert); :func:`fix_nms_fake` registers one that allows any count;
* NMS: the coordinate trick without the size branch (its vanilla loop gives the same keep set) and
  without the empty-input early return (an empty input gives an empty keep on its own);
* RoI pooling: the pooler's per-level scales are fixed at wrap time (they are the levels' strides,
  independent of the input size);
* masks: the per-detection paste loop becomes one ``grid_sample`` over all detections, the same
  bilinear resize torchvision's paste does with ``interpolate`` (half-pixel centres, edge clamp).

Input: one float image ``[1, 3, H, W]`` in [0, 1] (what the eager model takes, batched).  Output:
``boxes [K, 4]``, ``scores [K]``, ``labels [K]`` (int64) and for Mask R-CNN ``masks [K, 1, H, W]``,
K data-dependent (0 included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms, roi_align
from torchvision.ops.poolers import MultiScaleRoIAlign, _filter_input, _setup_scales

from ..errors import ExportError

__all__ = ["ExportableDetector", "is_detector", "check_not_one_stage", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("boxes", "scores", "labels", "masks")


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision Faster R-CNN (Mask R-CNN included)."""
    return isinstance(model, FasterRCNN)


def check_not_one_stage(model: nn.Module) -> None:
    """Refuse RetinaNet / FCOS / SSD before any tracing, with the reason and what works instead.

    Their post-processing (per-level top-k and score filtering before one NMS) is data-dependent in
    torchvision, and this module rewrites only Faster / Mask R-CNN's into a traceable graph; without
    this check they would be mistaken for dense models and fail deep inside ``torch.export``.
    """
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, (RetinaNet, FCOS, SSD)):
        raise ExportError(f"{type(model).__name__} (a one-stage detector) does not export yet: only Faster / "
                          "Mask R-CNN detectors and dense heads do; run it in PyTorch (model(images))")


_NMS_FAKE_FIXED = False


def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's fake (meta) ``nms`` kernel with a size that may be 0 or 1.

    torchvision's own calls the deprecated ``create_unbacked_symint()``, whose default minimum is 2:
    the exported program then asserts at run time that NMS kept at least two boxes, and an image
    with zero or one detection fails (torch.export) where eager returns it.
    """
    torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: "boxes should be [N, 4]")
    torch._check(scores.dim() == 1 and dets.size(0) == scores.size(0), lambda: "scores should be [N]")
    kept = torch.library.get_ctx().new_dynamic_size(min=0)
    return dets.new_empty(kept, dtype=torch.long)


def fix_nms_fake() -> None:
    """Register :func:`_nms_fake` for ``torchvision::nms`` (once per process; eager NMS is untouched)."""
    global _NMS_FAKE_FIXED
    if not _NMS_FAKE_FIXED:
        torch.library.register_fake("torchvision::nms", _nms_fake, allow_override=True)
        _NMS_FAKE_FIXED = True


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's ``_batched_nms_coordinate_trick`` without its two data-dependent branches.

    The boxes reaching it are clipped to the image, so they are >= 0 and a zero appended before the
    max changes nothing but makes an empty input well-defined.
    """
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (top + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def pool(pooler: MultiScaleRoIAlign, features: dict[str, Tensor], boxes: Tensor) -> Tensor:
    """``MultiScaleRoIAlign.forward`` for one image's boxes (torchvision's ``_multiscale_roi_align``
    takes ``len()`` of the boxes, a Python int the exporter cannot have).  Scales must be set."""
    levels = _filter_input(features, pooler.featmap_names)
    rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
    if len(levels) == 1:
        return roi_align(levels[0], rois, output_size=pooler.output_size, spatial_scale=pooler.scales[0],
                         sampling_ratio=pooler.sampling_ratio)
    level_of = pooler.map_levels([boxes])
    result = rois.new_zeros((rois.shape[0], levels[0].shape[1], *pooler.output_size))
    for level, (feature, scale) in enumerate(zip(levels, pooler.scales)):
        index = torch.where(level_of == level)[0]
        pooled = roi_align(feature, rois[index], output_size=pooler.output_size, spatial_scale=scale,
                           sampling_ratio=pooler.sampling_ratio)
        result = result.index_put((index,), pooled.to(result.dtype))
    return result


class ExportableDetector(nn.Module):
    """One image through ``model`` (a torchvision Faster/Mask R-CNN in eval mode) as export-friendly ops.

    The eager model's detections for ``image[0]`` equal this module's outputs; see the module
    docstring for what is restated and why.
    """

    def __init__(self, model: nn.Module, *, example_size: tuple[int, int] = (96, 96)):
        super().__init__()
        if not is_detector(model):
            raise ExportError(f"ExportableDetector wraps torchvision's FasterRCNN/MaskRCNN, got {type(model).__name__}")
        if model.transform.fixed_size is not None or len(model.transform.min_size) != 1:
            raise ExportError("the detector's transform must have one min_size and no fixed_size to export "
                              f"(got min_size={model.transform.min_size}, fixed_size={model.transform.fixed_size})")
        fix_nms_fake()
        self.model = model.eval()
        self.has_masks = isinstance(model, MaskRCNN) and model.roi_heads.has_mask()
        self._fix_pooler_scales(example_size)

    # -- setup ----------------------------------------------------------------------------------
    def _fix_pooler_scales(self, example_size: tuple[int, int]) -> None:
        """Give each RoI pooler its level scales now (eager does this on its first call, from sizes)."""
        with torch.no_grad():
            batch = torch.zeros(1, 3, *self._padded(*example_size))
            features = self.model.backbone(batch)
        heads = self.model.roi_heads
        for pooler in (heads.box_roi_pool, getattr(heads, "mask_roi_pool", None)):
            if isinstance(pooler, MultiScaleRoIAlign) and (pooler.scales is None or pooler.map_levels is None):
                levels = [features[name] for name in pooler.featmap_names]
                pooler.scales, pooler.map_levels = _setup_scales(
                    levels, [tuple(batch.shape[-2:])], pooler.canonical_scale, pooler.canonical_level)

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        # (n + step - 1) // step, not -(-n // step): ONNX's integer Div truncates toward zero.
        step = self.model.transform.size_divisible
        return (height + step - 1) // step * step, (width + step - 1) // step * step

    # -- forward --------------------------------------------------------------------------------
    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        torch._check(image.shape[0] == 1, lambda: "ExportableDetector takes one image [1, 3, H, W]")
        height, width = image.shape[-2:]
        batch, size = self._preprocess(image)
        features = self.model.backbone(batch)
        images = ImageList(batch, [size])
        proposals = self._proposals(images, features)
        boxes, scores, labels = self._detections(features, proposals, size)
        result = [resize_boxes(boxes, size, (height, width)), scores, labels]
        if self.has_masks:
            result.append(self._masks(features, boxes, labels, size, result[0], (height, width)))
        return tuple(result)

    def _preprocess(self, image: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Normalise, resize like ``GeneralizedRCNNTransform`` (float32 scale), pad to ``size_divisible``."""
        transform = self.model.transform
        x = transform.normalize(image[0])
        height, width = x.shape[-2:]
        # Python's float64 arithmetic, as the eager transform (min() of two quotients, then int()).
        shape = torch.stack([torch.scalar_tensor(height), torch.scalar_tensor(width)]).to(torch.float64)
        # A tensor over a tensor: ``float / tensor`` decomposes to reciprocal-then-multiply, which
        # rounds differently; the numerators are built at run time (``full_like``) because OpenVINO
        # misreads float64 scalar initializers and mis-sizes the resize.
        low = torch.full_like(shape[:1], float(transform.min_size[-1])) / shape.min()
        high = torch.full_like(shape[:1], float(transform.max_size)) / shape.max()
        scale = torch.minimum(low, high)
        resized = torch.floor(shape * scale).long()
        out_h, out_w = resized[0].item(), resized[1].item()
        torch._check(out_h >= 1)
        torch._check(out_w >= 1)
        x = F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False)
        pad_h, pad_w = self._padded(out_h, out_w)
        # Zeros concatenated rather than F.pad: OpenVINO's ONNX Pad with computed pads misplaces the image.
        x = torch.cat([x, x.new_zeros((1, x.shape[1], out_h, pad_w - out_w))], dim=3)
        x = torch.cat([x, x.new_zeros((1, x.shape[1], pad_h - out_h, pad_w))], dim=2)
        return x, (out_h, out_w)

    def _proposals(self, images: ImageList, features: dict[str, Tensor]) -> Tensor:
        """``RegionProposalNetwork.forward`` + ``filter_proposals`` for one image."""
        rpn = self.model.rpn
        levels = list(features.values())
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(images, levels)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(1, -1, 4)
        objectness = objectness.reshape(1, -1)
        level_ids = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(per_level)])
        top = rpn._get_top_n_idx(objectness, per_level)[0]
        boxes, scores, level_ids = proposals[0, top], torch.sigmoid(objectness[0, top]), level_ids[top]
        boxes = box_ops.clip_boxes_to_image(boxes, images.image_sizes[0])
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, level_ids = boxes[keep], scores[keep], level_ids[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, level_ids = boxes[keep], scores[keep], level_ids[keep]
        keep = batched_nms(boxes, scores, level_ids, rpn.nms_thresh)[: rpn.post_nms_top_n()]
        return boxes[keep]

    def _detections(self, features: dict[str, Tensor], proposals: Tensor,
                    size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """``RoIHeads.forward`` (boxes) + ``postprocess_detections`` for one image."""
        heads = self.model.roi_heads
        pooled = pool(heads.box_roi_pool, features, proposals)
        class_logits, box_regression = heads.box_predictor(heads.box_head(pooled))
        num_classes = class_logits.shape[-1]
        # decode() branches on the box count; decode_single() is the same arithmetic without it.
        boxes = heads.box_coder.decode_single(box_regression, proposals).reshape(-1, num_classes, 4)
        boxes = box_ops.clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
        scores = F.softmax(class_logits, -1)[:, 1:].reshape(-1)
        labels = torch.arange(num_classes).view(1, -1).expand(class_logits.shape[0], num_classes)[:, 1:].reshape(-1)
        keep = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def _masks(self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor, size: tuple[int, int],
               original_boxes: Tensor, original_size: tuple[int, int]) -> Tensor:
        """The mask branch of ``RoIHeads.forward``, then ``paste_masks_in_image`` for all detections at once."""
        heads = self.model.roi_heads
        pooled = pool(heads.mask_roi_pool, features, boxes)
        logits = heads.mask_predictor(heads.mask_head(pooled))
        (probabilities,) = maskrcnn_inference(logits, [labels])
        return paste_masks(probabilities, original_boxes, original_size)


def paste_masks(masks: Tensor, boxes: Tensor, size: tuple[int, int], padding: int = 1) -> Tensor:
    """torchvision's ``paste_masks_in_image`` as one ``grid_sample``: ``[K, 1, M, M]`` -> ``[K, 1, H, W]``.

    torchvision pads each mask by one pixel (``expand_masks``), grows its box by the same ratio
    (``expand_boxes``), truncates the box to integers, resizes the mask to the box's size with
    bilinear ``interpolate`` and copies it into a zero image.  Pixel ``(y, x)`` of the result is
    that resized mask at ``(y - y0, x - x0)`` inside the box and zero outside: sampling the padded
    mask at the same half-pixel centres with border clamping is exactly that resize.
    """
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    height, width = size
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int32)
    x0, y0 = boxes[:, 0:1].to(torch.float32), boxes[:, 1:2].to(torch.float32)
    box_w = torch.clamp(boxes[:, 2:3] - boxes[:, 0:1] + 1, min=1).to(torch.float32)
    box_h = torch.clamp(boxes[:, 3:4] - boxes[:, 1:2] + 1, min=1).to(torch.float32)
    xs = torch.arange(width, dtype=torch.float32)[None] - x0       # [K, W] column inside the box
    ys = torch.arange(height, dtype=torch.float32)[None] - y0      # [K, H]
    # interpolate's source coordinate (i + 0.5) * side / size - 0.5, as grid_sample's [-1, 1] with
    # align_corners=False: (src + 0.5) * 2 / side - 1 == (i + 0.5) * 2 / size - 1.
    gx = (xs + 0.5) * 2.0 / box_w - 1.0
    gy = (ys + 0.5) * 2.0 / box_h - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [K, H, W, 2]
    pasted = F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = ((xs >= 0) & (xs < box_w))[:, None, :] & ((ys >= 0) & (ys < box_h))[:, :, None]
    return pasted * inside[:, None].to(pasted.dtype)
