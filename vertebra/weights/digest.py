"""One content digest for every file vertebra writes: recorded when written, checked on every read.

Neither of vertebra's containers protects its own bytes: torch's zip reader does not check the
CRCs of a ``.pth`` file and safetensors has no checksum, so one flipped bit in a tensor loads
silently as a slightly different model (or a resumed run that quietly diverges).  A SHA-256 of
the file itself cannot be stored inside that file, so the digest is taken over the *content*
instead: the loaded object, walked in a canonical order.  Training checkpoints
(:mod:`vertebra.engine.checkpoint`) store it as ``state["sha256"]`` over every other field;
model artifacts (:mod:`vertebra.weights.artifact`) store it in their header over the header and
the tensors.  The same function checks both, so a reader needs nothing but the loaded content.

The walk is canonical so that what torch.load / safetensors give back hashes like what was
saved: mapping items in key order (safetensors reorders tensors), lists and tuples alike, a tensor
as its dtype, shape and raw bytes (on the CPU, contiguous), numbers by exact value.  Every item is
tagged and length-prefixed, so two different contents never feed the same byte stream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DIGEST_KEY", "content_digest", "seal", "verify_sealed", "is_sealed_format"]

#: The field that carries the digest in a sealed mapping (a training checkpoint).
DIGEST_KEY = "sha256"


def content_digest(value: Any) -> str:
    """Hex SHA-256 of ``value``: tensors, numpy arrays and plain data, nested in mappings and sequences."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def seal(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` plus ``DIGEST_KEY``: the digest of every other field (an old digest is replaced)."""
    body = {key: value for key, value in state.items() if key != DIGEST_KEY}
    return {**body, DIGEST_KEY: content_digest(body)}


def is_sealed_format(value: Any) -> bool:
    """Whether ``value`` is a mapping vertebra sealed: it names a ``vertebra-`` format."""
    return isinstance(value, Mapping) and str(value.get("format", "")).startswith("vertebra-")


def verify_sealed(state: Mapping[str, Any]) -> str | None:
    """``None`` when the digest in ``state`` matches its content, else what is wrong (for an error message)."""
    recorded = state.get(DIGEST_KEY)
    if not isinstance(recorded, str):
        return f"it has no {DIGEST_KEY!r} content digest (the field was lost or damaged, or an older tool wrote it)"
    body = {key: value for key, value in state.items() if key != DIGEST_KEY}
    if content_digest(body) != recorded:
        return "its content does not match the SHA-256 recorded when it was written (the file was damaged)"
    return None


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        tensor = value.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        _header(digest, b"T", [str(tensor.dtype), list(tensor.shape)])
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        _header(digest, b"A", [array.dtype.str, list(array.shape)])
        digest.update(array.reshape(-1).view(np.uint8))
    elif isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda item: (type(item[0]).__name__, str(item[0])))
        _header(digest, b"M", len(items))
        for key, item in items:
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        _header(digest, b"L", len(value))
        for item in value:
            _feed(digest, item)
    else:
        _feed_scalar(digest, value)


def _feed_scalar(digest: Any, value: Any) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        _header(digest, b"B", repr(value))
    elif isinstance(value, int):
        _header(digest, b"I", str(int(value)))
    elif isinstance(value, float):
        _header(digest, b"F", float(value).hex())
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        _header(digest, b"S", len(data))
        digest.update(data)
    elif isinstance(value, (bytes, bytearray)):
        _header(digest, b"Y", len(value))
        digest.update(bytes(value))
    else:  # torch.dtype, torch.device, complex ...: whatever weights_only lets through has a stable repr
        _header(digest, b"O", [f"{type(value).__module__}.{type(value).__qualname__}", repr(value)])


def _header(digest: Any, tag: bytes, detail: Any) -> None:
    digest.update(tag + json.dumps(detail).encode() + b"\n")
