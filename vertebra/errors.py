"""One small error hierarchy: users catch :class:`VertebraError` and get a message that says what to do.

Every user-facing failure in vertebra raises one of these, never a bare ``assert`` or a stack trace
from deep inside a convolution.  Each subclass also inherits the built-in exception a caller would
naturally expect (``KeyError``-like lookups stay ``LookupError``, bad values stay ``ValueError``) so
generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .text import plural

__all__ = [
    "VertebraError",
    "UnknownNameError",
    "ConfigError",
    "IncompatibleError",
    "PluginError",
    "WeightsError",
    "InputError",
    "QuantizationError",
    "DataError",
    "CheckpointError",
    "ArtifactError",
    "OutputError",
    "ExportError",
    "MissingExtraError",
    "ConformanceError",
    "suggest",
]


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for a mistyped ``name``, best first (difflib, cutoff 0.6)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


class VertebraError(Exception):
    """Base class of every error vertebra raises on purpose."""


class UnknownNameError(VertebraError, LookupError):
    """A backbone, head or plugin name that is not registered; suggests close matches."""

    def __init__(self, kind: str, name: str, candidates: Iterable[str]):
        candidates = sorted(candidates)
        self.kind, self.name, self.suggestions = kind, name, suggest(name, candidates)
        message = f"unknown {kind} {name!r}"
        if self.suggestions:
            message += "; did you mean " + " or ".join(self.suggestions) + "?"
        elif candidates:
            shown = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
            message += f"; registered {plural(kind)}: {shown}"
        else:
            message += f"; no {plural(kind)} are registered"
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return self.args[0]


class ConfigError(VertebraError, ValueError):
    """An unknown key, a wrong type or an invalid value in keyword arguments or a config.

    ``path`` is the dotted location inside a nested config (``backbone.output_stride``).
    """

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)

    @classmethod
    def unknown_keys(cls, unknown: Iterable[str], valid: Iterable[str], *, where: str,
                     path: str | None = None) -> "ConfigError":
        """The standard message for keys nobody accepts: names them, suggests, lists the valid ones."""
        unknown, valid = sorted(unknown), sorted(valid)
        hints = []
        for key in unknown:
            close = suggest(key, valid, n=1)
            if close:
                hints.append(f"{key!r} -> did you mean {close[0]!r}?")
        message = f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for {where}"
        if hints:
            message += " (" + "; ".join(hints) + ")"
        message += "; valid arguments: " + (", ".join(valid) if valid else "none")
        return cls(message, path=path)


class IncompatibleError(VertebraError, ValueError):
    """A head and a backbone whose feature contracts do not fit; the message names the fix."""


class PluginError(VertebraError, RuntimeError):
    """A plugin failed to load or registered something invalid; names the plugin and its distribution."""


class WeightsError(VertebraError, RuntimeError):
    """Weights that cannot be used: missing file, bad hash, corrupt file, missing or unexpected keys."""


class CheckpointError(WeightsError):
    """A training checkpoint that cannot be resumed (corrupt, or from another architecture)."""


class ArtifactError(WeightsError):
    """A model artifact that cannot be used: not an artifact, another format version, damaged."""


class ExportError(VertebraError, ValueError):
    """A model (or a format) that cannot be exported; the message names the head and why."""


class MissingExtraError(VertebraError, ImportError):
    """An optional dependency that is not installed; the message names the ``pip install`` to run."""


class ConformanceError(VertebraError, AssertionError):
    """A backbone that breaks the feature contract (``vertebra.plugins.testing.check_backbone``); the
    message lists every violation found, each naming the check, the level and both values."""


class QuantizationError(VertebraError, ValueError):
    """A model that cannot be quantized as asked: no usable calibration images, too few of them, or a
    head the chosen backend cannot quantize; the message names the alternative."""


class InputError(VertebraError, ValueError):
    """A tensor a model cannot take: wrong rank, wrong channel count, too small for a feature level."""


class DataError(VertebraError, ValueError):
    """A data set that cannot be read; the message names the file and the record."""


class OutputError(VertebraError, OSError):
    """A file or folder vertebra must write cannot be written: the disk is full, the place is read-only
    or not ours, or a file stands where a folder should be.  Names the path and what to do; an
    existing file there is left as it was (writes are atomic).  An ``OSError`` too, with its ``errno``.
    """

    def __str__(self) -> str:  # OSError would print "[Errno 28] ..." and drop the advice
        return str(self.args[0]) if self.args else ""
