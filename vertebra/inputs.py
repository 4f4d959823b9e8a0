"""The one check of what a model is called with: images in, or an :class:`~vertebra.errors.InputError` out.

Every backbone ``forward`` and every head ``forward`` that takes images calls it first, so a wrong
input fails with one message that says what to pass, instead of a torch error from deep inside a
convolution (or, worse, no error: torchvision's detectors broadcast a one-channel image to three
and return NaN boxes for NaN pixels).  Two entry points:

* :func:`check_batch` for a batch tensor ``(N, C, H, W)``: backbones, the classifier, dense heads.
* :func:`check_image_list` for the detectors: a list of ``(C, H, W)`` images or a 4-D batch.

What is checked, in order: a tensor at all (numpy arrays, PIL images, lists and ``None`` get the
conversion to use); a real floating dtype (integer images are ``x.float() / 255``); the same dtype
as the model's parameters (a float16/bfloat16 input on a float32 model, or float64, names both and
both fixes; any float16/bfloat16/float32 mix is fine under autocast, which casts per op); the same
device as the parameters (a ``meta`` input on a real model has no values to compute with); rank,
channels (never silently broadcast) and size; finally that every value is finite.

The finiteness test reads every value once (a sum; a boolean map is far slower).  It runs for CPU inputs only: on an accelerator,
turning its answer into a Python bool would wait for the device on every call and stall the
queue of asynchronous kernels, which costs far more than the pass itself.  A head and its backbone
both check; the second test of the same, unmodified tensor is skipped (a per-thread memo of the
last tensor checked, compared by identity and version counter, so an in-place change re-checks).

Nothing is checked under ``torch.jit`` tracing or scripting, ``torch.compile`` or ``torch.export``:
the checks are Python-level control flow on shapes and values that must not enter a graph.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError

__all__ = ["check_batch", "check_finite", "check_image_list", "checks_skipped", "model_dtype_and_device"]

_HALF = (torch.float16, torch.bfloat16)
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_memo = threading.local()  # .last: (weakref to the tensor, its version, data pointer, shape)


def checks_skipped() -> bool:
    """Whether a graph is being captured (tracing, scripting, compiling, exporting): check nothing."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


def model_dtype_and_device(module: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """The dtype and device of ``module``'s first floating parameter (or buffer); ``None`` without one."""
    for tensors in (module.parameters(), module.buffers()):
        for tensor in tensors:
            if tensor.is_floating_point():
                return tensor.dtype, tensor.device
    return None, None


def check_batch(x: Any, module: nn.Module, *, channels: int, min_size: int = 1, what: str = "model") -> None:
    """Refuse anything but a batch ``(N, channels, H, W)`` that ``module`` can run, H and W >= ``min_size``.

    ``what`` names the model in messages that need it (the size rule).
    """
    if checks_skipped():
        return
    _check_is_tensor(x, "batch", channels=channels)
    if x.dim() != 4:
        hint = " (one image: add the batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise InputError(f"expected a batch of images shaped (N, {channels}, H, W), got a tensor with "
                         f"{x.dim()} dimension(s) {tuple(x.shape)}{hint}")
    _check_dtype_and_device(x, module)
    if x.shape[1] != channels:
        raise InputError(f"expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
                         f"{_channel_hint(x.shape[1], channels, batch=True)}")
    if x.shape[0] == 0:
        raise InputError(f"the batch is empty (input shape {tuple(x.shape)}); pass at least one image")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        if min_size <= 1:
            raise InputError(f"input {x.shape[-2]}x{x.shape[-1]} has no pixels; height and width must be at "
                             "least 1")
        raise InputError(f"input {x.shape[-2]}x{x.shape[-1]} is too small: the {what} needs height and width of "
                         f"at least {min_size}")
    check_finite(x)


def check_image_list(images: Any, module: nn.Module, *, channels: int) -> None:
    """Refuse anything but a non-empty list of ``(channels, H, W)`` images (or a 4-D batch) ``module`` can run."""
    if checks_skipped():
        return
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise InputError(f"expected a list of images shaped ({channels}, H, W) or a batch (N, {channels}, H, W), "
                             f"got a tensor with {images.dim()} dimension(s) {tuple(images.shape)}"
                             + (" (one image: pass [image])" if images.dim() == 3 else ""))
        check_batch(images, module, channels=channels)
        return
    if not isinstance(images, (list, tuple)):
        _check_is_tensor(images, "images", channels=channels)  # raises: not a tensor
    if len(images) == 0:
        raise InputError("got an empty list of images; pass at least one image shaped "
                         f"({channels}, H, W) (torchvision's detectors cannot run on none)")
    for index, image in enumerate(images):
        try:
            _check_image(image, module, channels=channels)
        except InputError as error:
            raise InputError(f"image {index}: {error}") from None


def _check_image(image: Any, module: nn.Module, *, channels: int) -> None:
    _check_is_tensor(image, "image", channels=channels)
    if image.dim() != 3:
        hint = ""
        if image.dim() == 2:
            hint = f" (a grayscale HxW image: x.unsqueeze(0).expand({channels}, -1, -1))"
        elif image.dim() == 4:
            hint = " (a batch: pass it as the batch tensor itself, or list(batch))"
        raise InputError(f"expected an image shaped ({channels}, H, W), got a tensor with {image.dim()} "
                         f"dimension(s) {tuple(image.shape)}{hint}")
    _check_dtype_and_device(image, module)
    if image.shape[0] != channels:
        raise InputError(f"expected {channels} channels, got {image.shape[0]} (image shape {tuple(image.shape)})"
                         f"{_channel_hint(image.shape[0], channels, batch=False)}")
    if image.shape[-2] == 0 or image.shape[-1] == 0:
        raise InputError(f"image {image.shape[-2]}x{image.shape[-1]} has no pixels")
    check_finite(image)


# How each form is spelled in messages: the shape, and what turns one converted image into it.
_FORMS = {"batch": ("a float tensor shaped (N, {c}, H, W)", "({x}).unsqueeze(0)"),
          "image": ("a float tensor shaped ({c}, H, W)", "{x}"),
          "images": ("a list of float tensors shaped ({c}, H, W)", "[{x}]")}


def _check_is_tensor(x: Any, form: str, *, channels: int) -> None:
    """Refuse a non-tensor with the conversion that gives ``form`` ("batch", "image" or "images")."""
    if isinstance(x, Tensor):
        return
    shaped, wrap = _FORMS[form]
    shaped = shaped.format(c=channels)
    module = type(x).__module__.split(".")[0]
    kind = "None" if x is None else type(x).__name__ if module == "builtins" else f"{module}.{type(x).__name__}"
    if module == "numpy":
        converted = wrap.format(x="torch.from_numpy(x).permute(2, 0, 1).float() / 255")
        hint = f"convert it: {converted} for an HxWxC uint8 image"
    elif module == "PIL":
        hint = "convert it: " + wrap.format(x="torchvision.transforms.functional.to_tensor(image)")
    elif isinstance(x, (list, tuple)) and form == "batch" and x and all(isinstance(t, Tensor) for t in x):
        hint = "stack the images into one batch: torch.stack(images)"
    else:
        hint = f"pass {shaped}, values in [0, 1]"
    raise InputError(f"expected a torch.Tensor, got {kind}; {hint}")


def _check_dtype_and_device(x: Tensor, module: nn.Module) -> None:
    if x.is_complex() or not x.is_floating_point():
        fix = "x.float() / 255 (for 0-255 pixel values)" if x.dtype != torch.bool else "x.float()"
        raise InputError(f"expected a floating-point image (values in [0, 1]), got dtype {x.dtype}; "
                         f"convert it with {fix}")
    dtype, device = model_dtype_and_device(module)
    if device is not None and x.device != device:
        if x.device.type == "meta":
            fix = ("a meta tensor has no values to compute with: pass a real tensor, or build the model on meta "
                   "too (with torch.device('meta')) to check shapes")
        else:
            fix = f"move it with x.to({str(device)!r}) (or the model with model.to({str(x.device)!r}))"
        raise InputError(f"the input is on {x.device} but the model's parameters are on {device}; {fix}")
    if dtype is None or x.dtype == dtype or _autocast_covers(x, dtype):
        return
    fix = f"pass {_cast('x', dtype)}"
    if dtype in _HALF or x.dtype in _HALF or dtype == torch.float64:
        fix += f", or convert the model with {_cast('model', x.dtype)}"
    raise InputError(f"the input is {x.dtype} but the model's parameters are {dtype}; {fix}")


def _autocast_covers(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether autocast is on for the input's device, which casts float16/bfloat16/float32 per op."""
    device_type = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return False
    return enabled and x.dtype in _AUTOCAST_DTYPES and dtype in _AUTOCAST_DTYPES


_CASTS = {torch.float16: "half", torch.bfloat16: "bfloat16", torch.float32: "float", torch.float64: "double"}


def _cast(name: str, dtype: torch.dtype) -> str:
    """``x.half()``, ``model.float()``...: the call that converts to ``dtype``."""
    method = _CASTS.get(dtype)
    return f"{name}.{method}()" if method else f"{name}.to({dtype})"


def _channel_hint(got: int, channels: int, *, batch: bool) -> str:
    if got == 1 and channels == 3:
        expand = "x.expand(-1, 3, -1, -1)" if batch else "x.expand(3, -1, -1)"
        return f"; a grayscale image is not broadcast: repeat it with {expand} or convert it to RGB"
    if got == 4 and channels == 3:
        return "; drop the alpha channel with " + ("x[:, :3]" if batch else "x[:3]")
    if got > 4 and channels in (1, 3):
        return "; channels last? permute it with " + ("x.permute(0, 3, 1, 2)" if batch else "x.permute(2, 0, 1)")
    return ""


def check_finite(x: Tensor) -> None:
    """Refuse NaN or infinite values in a CPU tensor (see the module docstring for why CPU only)."""
    if x.device.type != "cpu" or not x.is_floating_point() or _seen(x):
        return
    # One sum instead of isfinite(x).all(): a NaN or an infinity makes the sum non-finite, and a
    # reduction is many times cheaper than a boolean map of the whole batch.  Only a non-finite sum
    # pays for the exact count, which also clears finite values whose sum merely overflowed.
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    bad = 0 if bool(torch.isfinite(total)) else int(x.numel() - torch.isfinite(x).sum())
    if bad:
        nan = int(torch.isnan(x).sum())
        raise InputError(f"the input has {bad} non-finite value(s) ({nan} NaN, {bad - nan} infinite) of "
                         f"{x.numel()}; the model would return NaN outputs: fix or drop those images "
                         "(e.g. torch.nan_to_num(x))")
    _memo.last = (weakref.ref(x), _state(x))


def _state(x: Tensor) -> tuple | None:
    """What changes when a tensor's values may have: version counter, storage, shape (None: unknown)."""
    try:
        return x._version, x.data_ptr(), tuple(x.shape)
    except RuntimeError:  # a tensor without storage (a wrapper subclass): never trusted from memory
        return None


def _seen(x: Tensor) -> bool:
    """Whether ``x`` is the tensor this thread checked last, unchanged since (same object, version, storage)."""
    last = getattr(_memo, "last", None)
    if last is None or last[0]() is not x:
        return False
    state = _state(x)
    return state is not None and state == last[1]

