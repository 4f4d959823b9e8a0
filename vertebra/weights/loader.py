"""Load pretrained weights into a vertebra model: strictly, verifiably, and without surprises.

``load_weights(model, source)`` takes a local ``.pth``/``.pt``/``.safetensors`` file, a named
checkpoint (``"efficientnet_b0.imagenet"``, see :func:`~vertebra.weights.named_weights`) or an in-memory state dict.
The order of operations is the point of this module; nothing touches the model until every check
has passed, so a failed load leaves the model exactly as it was:

1. refuse a model on the ``meta`` device (there is no storage to copy into);
2. resolve the file (cache / download for named checkpoints) and verify its SHA-256 *before*
   unpickling anything; read it with ``weights_only=True`` (or safetensors);
3. unwrap a training checkpoint (``{"state_dict": ...}``, ``{"model": ...}``, a DDP ``module.``
   prefix) explicitly, and say so in the report;
4. map checkpoint names to the model's names with the model's :class:`KeyMap`
   (``model.weights_key_map``), unless the keys already are the model's own;
5. compare keys and shapes; any missing, unexpected or mis-shaped tensor is a
   :class:`~vertebra.errors.WeightsError` listing them (fine-tuning asks for ``strict=False,
   mismatched="skip"`` instead: what fits loads, and the rest is listed in the report);
6. only then ``model.load_state_dict(..., strict=True)``.

A key map never drops weights silently: prefixes it drops are declared on the map and every
dropped key is listed in :attr:`LoadReport.dropped`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from torch import Tensor, nn

from ..errors import WeightsError
from .cache import fetch, verify_sha256
from .entry import WeightsEntry
from .files import read_state_dict, unwrap_state_dict
from .keys import KeyMap, check_keys, compare_keys
from .names import checkpoints, get_weights_entry

__all__ = ["load_weights", "LoadReport", "Source", "WEIGHT_SUFFIXES"]

Source = Union[str, "os.PathLike[str]", WeightsEntry, Mapping[str, Tensor]]
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did.  ``str(report)`` is a one-paragraph summary for logs.

    Attributes:
        source: what was loaded (entry name, file path, or ``"<state_dict>"``).
        path: the file read, if any.
        loaded: number of tensors copied into the model.
        dropped: checkpoint keys the key map dropped on purpose (e.g. ``classifier.*`` when a
            backbone is loaded from a classification checkpoint).
        missing: model keys the checkpoint lacks (only non-empty with ``strict=False``).
        unexpected: checkpoint keys the model lacks (only non-empty with ``strict=False``).
        mismatched: ``(key, shape in the file, shape in the model)`` of the tensors left out because
            their shapes differ (only non-empty with ``mismatched="skip"``: a classifier for another
            class count); the model keeps its own, freshly initialised tensor there.
        kept: model buffers absent from the checkpoint that were left as they are
            (``num_batches_tracked`` of BatchNorm layers; older checkpoints predate it).
        mapped: whether the key map was applied (``False`` when the keys already matched).
        unwrapped: how the state dict was found inside the file (``"model"``, ``"module."`` ...).
        sha256: the verified digest of the file, when a hash was checked.
    """

    source: str
    path: Path | None
    loaded: int
    dropped: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    kept: tuple[str, ...] = ()
    mapped: bool = False
    unwrapped: tuple[str, ...] = ()
    sha256: str | None = None

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.unwrapped:
            parts.append("unwrapped " + " > ".join(self.unwrapped))
        if self.mapped:
            parts.append("names mapped by the model's weights_key_map")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} on purpose ({_prefix_summary(self.dropped)})")
        if self.kept:
            parts.append(f"kept {len(self.kept)} num_batches_tracked buffers absent from the file")
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_prefix_summary(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_prefix_summary(self.unexpected)})")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} of another shape left out "
                         f"({_prefix_summary([key for key, _, _ in self.mismatched])})")
        if self.sha256:
            parts.append(f"sha256 {self.sha256[:12]}... verified")
        return "; ".join(parts)


def load_weights(model: nn.Module, source: Source, *, strict: bool = True, sha256: str | None = None,
                 key_map: KeyMap | None = None, download: bool = True,
                 mismatched: Literal["error", "skip"] = "error") -> LoadReport:
    """Load ``source`` into ``model`` after checking everything; the model is untouched on failure.

    Args:
        model: the module to load into (a Backbone, a registry-built model, any ``nn.Module``).
        source: a named checkpoint (``"mobilenet_v3_large.imagenet"``), a :class:`WeightsEntry`, a
            path to a ``.pth``/``.pt``/``.safetensors`` file, or a state dict.
        strict: with ``True`` (the default) every model tensor must be in the checkpoint and every
            checkpoint tensor must be used (after the key map's declared drops).  ``False`` loads
            the tensors present in both and lists the rest in the report; shapes must still match.
        sha256: expected SHA-256 (full or prefix) of a local file; checked before reading it.
            Named checkpoints always carry their own.
        key_map: overrides ``model.weights_key_map`` (rename rules and declared drops).
        download: whether a named checkpoint absent from the cache may be downloaded.
        mismatched: ``"error"`` (the default) refuses a tensor whose shape differs from the model's;
            ``"skip"`` (with ``strict=False``: fine-tuning) leaves it out and lists it in
            :attr:`LoadReport.mismatched`.  Nothing fitting at all is still an error.

    Returns:
        a :class:`LoadReport`.

    Raises:
        WeightsError: meta-device model, missing/corrupt/truncated file, wrong hash, unreadable
            container, or keys/shapes that do not fit (the message lists them).
        UnknownNameError: ``source`` is neither a file nor a known checkpoint name.
    """
    _refuse_meta(model)
    key_map = key_map if key_map is not None else getattr(model, "weights_key_map", None)
    if key_map is not None and not isinstance(key_map, KeyMap):
        raise WeightsError(f"{type(model).__name__}.weights_key_map must be a vertebra.weights.KeyMap "
                           f"or None, got {type(key_map).__name__}")
    state, label, path, digest = _read_source(model, source, sha256=sha256, download=download)
    state, unwrapped = unwrap_state_dict(state, label)
    own = model.state_dict()
    if key_map is None or (state and set(state) <= set(own)):  # already the model's own names
        mapped, dropped, used_map = dict(state), (), False
    else:
        mapped, dropped = key_map.apply(state)
        used_map = True
        if mismatched == "skip" and len(own.keys() & state.keys()) > len(own.keys() & mapped.keys()):
            # a partial load of the model's own names (its FrozenBatchNorm2d lacks the file's
            # num_batches_tracked, say): the map would rename names that already fit
            mapped, dropped, used_map = dict(state), (), False
    skipped = _skip_mismatched(model, own, mapped, strict=strict, mode=mismatched, source=label)
    mapped = {key: value for key, value in mapped.items() if key not in {k for k, _, _ in skipped}}
    result = check_keys(model, own, mapped, strict=strict, source=label, mapped=used_map, dropped=dropped)
    try:
        model.load_state_dict(result.state, strict=strict)
    except RuntimeError as error:  # not expected after check_keys; never let torch's text be the only clue
        raise WeightsError(f"{label}: load_state_dict refused the checked weights: {error}") from error
    return LoadReport(source=label, path=path, loaded=len(result.state) - len(result.kept),
                      dropped=(*dropped, *result.ignored), missing=result.missing,
                      unexpected=result.unexpected, mismatched=skipped, kept=result.kept,
                      mapped=used_map, unwrapped=unwrapped, sha256=digest)


# -- helpers ----------------------------------------------------------------------------------

def _skip_mismatched(model: nn.Module, own: Mapping[str, Tensor], state: Mapping[str, Tensor], *, strict: bool,
                     mode: str, source: str) -> tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]:
    """The tensors ``mode="skip"`` leaves out for their shape; none in the default ``"error"`` mode."""
    if mode not in ("error", "skip"):
        raise WeightsError(f"mismatched must be 'error' or 'skip', got {mode!r}")
    if mode == "error":
        return ()
    if strict:
        raise WeightsError("mismatched='skip' leaves tensors out, which strict=True forbids; pass strict=False")
    skipped = compare_keys(model, state, own).mismatched
    if skipped and len(skipped) == sum(1 for key in state if key in own):
        raise WeightsError(f"{source}: no tensor of it fits {type(model).__name__} (all {len(skipped)} shared "
                           f"names have other shapes, e.g. {skipped[0][0]} file {list(skipped[0][1])} vs model "
                           f"{list(skipped[0][2])}); it was made for another architecture")
    return skipped


def _refuse_meta(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise WeightsError(
                f"cannot load weights into a model on the meta device ({name!r} has no storage); build "
                f"the model on a real device first (outside `with torch.device('meta')`), or call "
                f"model.to_empty(device='cpu') and then load")


def _read_source(model: nn.Module, source: Source, *, sha256: str | None,
                 download: bool) -> tuple[Any, str, Path | None, str | None]:
    if isinstance(source, Mapping):
        return source, "<state_dict>", None, None
    if isinstance(source, WeightsEntry):
        entry = source
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        file = Path(text).expanduser()
        if file.is_file():
            digest = verify_sha256(file, sha256, what="weights file") if sha256 else None
            return read_state_dict(file), str(file), file, digest
        if os.sep in text or "/" in text or file.suffix in WEIGHT_SUFFIXES:
            raise WeightsError(f"weights file {str(file)!r} does not exist; check the path, or pass a "
                               f"named checkpoint (vertebra.weights.named_weights() lists them)")
        entry = get_weights_entry(text)
    else:
        raise WeightsError(f"weights source must be a file path, a checkpoint name, a WeightsEntry or a "
                           f"state dict, got {type(source).__name__}")
    _check_entry_fits(model, entry)
    file, digest = fetch(entry, download=download)
    return read_state_dict(file), entry.name, file, digest


def _check_entry_fits(model: nn.Module, entry: WeightsEntry) -> None:
    """Refuse an entry for another backbone or head before any download, using ``model.config``."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        return
    if "head" in config:
        backbone = config.get("backbone")
        backbone_name = backbone.get("name") if isinstance(backbone, Mapping) else backbone
        head = config.get("head")
    else:
        backbone_name, head = config.get("name"), None
    if isinstance(backbone_name, str) and _bare(backbone_name) != entry.backbone:
        raise WeightsError(f"weights {entry.name!r} are for backbone {entry.backbone!r}, but this model's "
                           f"backbone is {backbone_name!r}; pick a checkpoint for {backbone_name!r} "
                           f"(vertebra.weights.named_weights()) or build the model with {entry.backbone!r}")
    if isinstance(head, str) and _bare(head) != entry.head:
        where = _backbone_attribute(model)
        remedy = (f"; to start only the backbone from them, load into the backbone: "
                  f"load_weights(model.{where}, {entry.name!r})" if where and entry.head == "classifier" else "")
        raise WeightsError(f"weights {entry.name!r} are a {entry.head!r} checkpoint, but this model's head is "
                           f"{head!r}{remedy}")
    if entry.backbone_kwargs and isinstance(backbone_name, str):
        _check_backbone_options(config, entry)


def _check_backbone_options(config: Mapping[str, Any], entry: WeightsEntry) -> None:
    """Refuse a model whose backbone was built with other options than the checkpoint's (``width_mult``...)."""
    try:
        built = checkpoints().backbone_options(config)
    except Exception:  # noqa: BLE001 - a config the registry cannot resolve: the strict load still checks
        return
    wrong = {key: value for key, value in entry.backbone_kwargs.items() if key not in built or built[key] != value}
    if wrong:
        got = ", ".join(f"{key}={built[key]!r}" if key in built else f"no {key!r} option" for key in wrong)
        want = ", ".join(f"{key}={value!r}" for key, value in wrong.items())
        raise WeightsError(f"weights {entry.name!r} were trained with backbone option(s) {want}, but this model's "
                           f"backbone has {got}; build it with backbone={entry.backbone_spec!r}")


def _bare(name: str) -> str:
    """``"plugin:name"`` -> ``"name"`` (entries name built-in architectures)."""
    return name.rsplit(":", 1)[-1]


def _backbone_attribute(model: nn.Module) -> str | None:
    """Dotted path of the first submodule that is a backbone (has ``features`` and ``feature_info``)."""
    for name, module in model.named_modules():
        if name and hasattr(module, "feature_info") and hasattr(module, "features"):
            return name
    return None


def _prefix_summary(keys: Iterable[str], limit: int = 4) -> str:
    """``"classifier.* (4), aux.* (2)"``: key lists summarised by their first component."""
    counts: OrderedDict[str, int] = OrderedDict()
    for key in keys:
        head = key.split(".", 1)[0]
        counts[head] = counts.get(head, 0) + 1
    parts = [f"{head}.* ({count})" for head, count in list(counts.items())[:limit]]
    return ", ".join(parts) + (", ..." if len(counts) > limit else "")
