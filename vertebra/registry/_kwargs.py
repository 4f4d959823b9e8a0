"""Checking keyword arguments against a factory's signature, and calling it with useful errors.

A factory's explicit keyword arguments (with defaults) are its public options, so ``inspect`` is the
single source of truth: no separate schema to drift out of date.  Errors carry the dotted path of
the offending key inside a nested config (``backbone.output_stride``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, PluginError, VertebraError
from ..plugins._guard import describe_cause
from ..validation import matches_hint

__all__ = ["REQUIRED", "Signature", "signature_of", "join_path", "call_factory"]


class _Required:
    """Marks an argument without a default in :func:`describe` output."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def join_path(*parts: str | None) -> str | None:
    """``join_path("model", "backbone", "x") == "model.backbone.x"``; empty or ``None`` parts are skipped."""
    joined = ".".join(p for p in parts if p)
    return joined or None


@dataclass(frozen=True)
class Signature:
    """A factory's keyword arguments ``{name: default or REQUIRED}``, and whether it takes ``**kwargs``."""

    params: dict[str, Any]
    annotations: dict[str, Any]
    var_keyword: bool

    def check(self, kwargs: Mapping[str, Any], *, where: str, path: str | None) -> None:
        """Refuse unknown keys (listing the valid ones, suggesting close ones) and missing required ones."""
        if not self.var_keyword:
            unknown = [key for key in kwargs if key not in self.params]
            if unknown:
                key_path = join_path(path, unknown[0]) if len(unknown) == 1 else path
                raise ConfigError.unknown_keys(unknown, self.params, where=where, path=key_path)
        missing = [k for k, v in self.params.items() if v is REQUIRED and k not in kwargs]
        if missing:
            raise ConfigError(f"{where} needs argument{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(missing)} (no default)", path=path)


def signature_of(func: Callable[..., Any], *, skip_first: bool = False) -> Signature:
    """The accepted keyword arguments of ``func``; ``skip_first`` drops a head builder's ``backbone``."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return Signature({}, {}, True)
    parameters = list(sig.parameters.values())
    if skip_first and parameters and parameters[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                            inspect.Parameter.POSITIONAL_OR_KEYWORD):
        parameters = parameters[1:]
    params: dict[str, Any] = {}
    var_keyword = False
    for p in parameters:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            params[p.name] = REQUIRED if p.default is inspect.Parameter.empty else p.default
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable annotations only cost us better messages
        hints = {}
    return Signature(params, {k: v for k, v in hints.items() if k in params}, var_keyword)


def call_factory(func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], *, where: str,
                 path: str | None, signature: Signature, owner: str | None = None) -> Any:
    """Call ``func(*args, **kwargs)``; turn what is clearly a bad argument into a :class:`ConfigError`.

    * A :class:`ConfigError` the factory raises gets ``path`` prefixed to its own path.
    * A ``TypeError`` is re-raised as a ConfigError naming the argument(s) whose type does not
      match the annotation or the default.
    * Any other failure that is not a :class:`VertebraError` is the factory's own bug: with
      ``owner`` (``plugin 'x' (dist 1.0)``) it becomes a :class:`PluginError` naming the owner, the
      factory and the cause, so the user knows whose bug it is; without, it propagates (a ``meta``
      probe falls back to the real build on it).  Running out of memory and ``OSError`` (a download or
      a file the factory reads) are the environment's, not bugs, and propagate.
    """
    try:
        return _call(func, args, kwargs, where=where, path=path, signature=signature)
    except (VertebraError, MemoryError, OSError):
        raise
    except Exception as exc:
        if owner is None or type(exc).__name__ == "OutOfMemoryError":
            raise
        raise PluginError(f"{where} from {owner} failed: {describe_cause(exc)} (a bug in that factory, "
                          f"or an option value it does not check; the original traceback is chained below)"
                          ) from exc


def _call(func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any], *, where: str,
          path: str | None, signature: Signature) -> Any:
    try:
        return func(*args, **kwargs)
    except ConfigError as exc:
        if not path:
            raise
        message = str(exc)
        if exc.path and message.startswith(f"{exc.path}: "):
            message = message[len(exc.path) + 2:]
        raise ConfigError(message, path=join_path(path, exc.path)) from exc
    except TypeError as exc:
        suspects = [key for key, value in kwargs.items() if not _fits(value, key, signature)]
        if not suspects:
            raise
        details = "; ".join(f"{key}={kwargs[key]!r} is a {type(kwargs[key]).__name__}, expected "
                            f"{_expected(key, signature)}" for key in suspects)
        key_path = join_path(path, suspects[0]) if len(suspects) == 1 else path
        raise ConfigError(f"invalid argument for {where}: {details} ({type(exc).__name__}: {exc})",
                          path=key_path) from exc


def _expected(key: str, signature: Signature) -> str:
    hint = signature.annotations.get(key)
    if hint is not None:
        return _describe_type(hint)
    default = signature.params.get(key)
    return f"a {type(default).__name__} like the default {default!r}"


def _describe_type(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _fits(value: Any, key: str, signature: Signature) -> bool:
    """Whether ``value`` plausibly has the right type for ``key`` (annotation first, then default)."""
    hint = signature.annotations.get(key)
    if hint is not None:
        verdict = matches_hint(value, hint)
        if verdict is not None:
            return verdict
    default = signature.params.get(key, REQUIRED)
    if default is REQUIRED or default is None or value is None:
        return True
    return matches_hint(value, type(default)) is not False
