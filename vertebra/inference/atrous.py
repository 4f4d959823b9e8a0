"""Atrous convolutions that skip the taps which can only ever read zero padding.

A stride-1 ``k x k`` convolution with dilation ``d`` and "same" zero padding ``d * (k // 2)`` reads,
for output row ``i``, the input rows ``i + j * d`` for ``j = -k//2 .. k//2``.  When ``d`` is at least
the input height, every row but the centre one (``j = 0``) falls outside the image, into the zero
padding, so those taps add exact zeros: the convolution *is* the ``1 x k`` convolution of the centre
row of the kernel, with no padding along that axis.  The same holds for columns, and for both axes
it is a ``1 x 1`` convolution.  Gradients agree too (the skipped taps' gradient is a sum of products
with zeros).

Why it matters: DeepLabV3's ASPP uses rates 12, 24 and 36 on the stride-16 map, which is 14x14 for a
224 px input, so two of its three 960->256 (MobileNetV3) or 320->256 (EfficientNet) 3x3 branches
read nothing but their centre tap, and all three do at 192 px and below.  oneDNN skips part of the
padded work on its own, but not all of it, so the equivalent 1x1 convolution is clearly faster
(benchmarks/README.md has the measurement).  :func:`vertebra.inference.attach_eager` applies
:func:`skip_padding_taps` to the ASPP modules of a model (the registry does it for every model).

The shortcut is taken per call, from the input's size, and only in eager execution: a tracer, a
scripted or exported graph must stay correct for other input sizes, so they see the plain convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AtrousConv2d", "skip_padding_taps"]


class AtrousConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state_dict) that drops the kernel rows / columns which can
    only read zero padding for the current input size (see the module docstring)."""

    # Its output is still a convolution by ``weight`` and ``bias``: vertebra.optimize may fold a
    # following BatchNorm into them (see vertebra.inference.folding.foldable).
    folds_as_conv2d = True

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return super()._conv_forward(input, weight, bias)
        (dilation_h, dilation_w), (padding_h, padding_w) = self.dilation, self.padding
        rows = dilation_h >= input.shape[-2] and self.kernel_size[0] > 1
        columns = dilation_w >= input.shape[-1] and self.kernel_size[1] > 1
        if not (rows or columns):
            return super()._conv_forward(input, weight, bias)
        if rows:
            centre = self.kernel_size[0] // 2
            weight, padding_h, dilation_h = weight[:, :, centre:centre + 1], 0, 1
        if columns:
            centre = self.kernel_size[1] // 2
            weight, padding_w, dilation_w = weight[:, :, :, centre:centre + 1], 0, 1
        return F.conv2d(input, weight, bias, self.stride, (padding_h, padding_w), (dilation_h, dilation_w),
                        self.groups)


def _eligible(conv: nn.Module) -> bool:
    """A plain dilated Conv2d whose padding is exactly "same" zero padding, stride 1, odd kernel."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if conv.stride != (1, 1) or max(conv.dilation) == 1:
        return False
    return all(k % 2 == 1 and p == d * (k // 2)
               for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))


def skip_padding_taps(module: nn.Module) -> int:
    """Turn every eligible dilated ``nn.Conv2d`` under ``module`` into an :class:`AtrousConv2d`, in place.

    Only the class changes: parameters, buffers, hooks and state_dict keys stay as they are, so
    torchvision checkpoints still load strictly.  Returns how many convolutions were changed.
    """
    changed = 0
    for conv in module.modules():
        if _eligible(conv):
            conv.__class__ = AtrousConv2d  # adds behaviour only; no state of its own to initialise
            changed += 1
    return changed
