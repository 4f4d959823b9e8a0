"""Building backbones and models by name or config, checking the feature contract before any weights exist.

The head flow: the head's :class:`~vertebra.heads.Requirements` (for the user's head options) are
merged into the backbone's keyword arguments; the backbone is built on the ``meta`` device (shapes
only, no memory) and its ``feature_info`` checked against the requirements; only then are the real
backbone and the head built.  Every result carries ``.config`` that rebuilds it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, IncompatibleError, PluginError, VertebraError, WeightsError
from ..plugins._lock import first_use_lock
from ._catalog import Entry, catalog
from ._kwargs import call_factory, join_path, signature_of
from ._probe import feature_mismatch

if TYPE_CHECKING:  # pragma: no cover
    from ..heads._base import Requirements

__all__ = ["build", "build_backbone", "build_from_config", "compatible", "load_config", "meta_backbone",
           "resolved_backbone_options"]


# -- public API -------------------------------------------------------------------------------------
def build_backbone(name: str, weights: str | os.PathLike | None = None, **kwargs: Any):
    """Build the backbone registered as ``name`` (bare or ``plugin:name``) with ``kwargs``.

    ``weights``: a checkpoint path or named entry, loaded by :func:`vertebra.weights.load_weights`.
    The result's ``.config`` is ``{"name": name, **kwargs}``.
    """
    return _build_backbone(name, kwargs, weights=weights, path=None)


def build(head: str, backbone: str | Mapping[str, Any] | None = None,
          weights: str | os.PathLike | None = None, **kwargs: Any):
    """Build the model ``head`` on ``backbone``: a name, ``plugin:name``, or ``{"name": ..., **kwargs}``.

    ``kwargs`` are the head's options.  The backbone is adapted to what the head requires (e.g.
    ``output_stride=16`` for LR-ASPP) and checked on the ``meta`` device first, so an incompatible
    pair fails with :class:`~vertebra.errors.IncompatibleError` before any weights are allocated.
    """
    return _build_model(head, backbone, kwargs, weights=weights, path=None)


def build_from_config(config: Mapping[str, Any] | str | os.PathLike, *, path: str | None = None):
    """Build from plain data: a model ``{"head": ..., "backbone": {...}, **head options}`` or a backbone
    ``{"name": ..., **backbone options}``.

    ``config`` may also be a path to a ``.yaml``/``.yml``/``.json`` file.  An optional ``"weights"``
    key is loaded after building.  ``path`` prefixes error locations when the config is nested in a
    bigger one (``path="model"`` reports ``model.backbone.output_stride``).
    ``build_from_config(model.config)`` rebuilds the same architecture.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(config).__name__}", path=path)
    config = dict(config)
    weights = config.pop("weights", None)
    if "head" in config:
        return _build_model(*_model_parts(config), weights=weights, path=path)
    if "name" in config:
        return _build_backbone(config.pop("name"), config, weights=weights, path=path)
    raise ConfigError("a config needs 'head' (a model: {'head': 'lraspp', 'backbone': 'efficientnet_b0', ...}) "
                      f"or 'name' (a backbone: {{'name': 'efficientnet_b0', ...}}); got keys {sorted(config)}",
                      path=path)


def load_config(file: str | os.PathLike) -> Any:
    """Read a YAML (``yaml.safe_load``) or JSON config file; errors name the file."""
    file = Path(file)
    if file.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {str(file)!r} must end in .yaml, .yml or .json")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from exc
    try:
        if file.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"config file {str(file)!r} is not valid JSON: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError; its message carries the line
        if type(exc).__module__.startswith("yaml"):
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"config file {str(file)!r} is not valid YAML{where}: {problem}") from exc
        raise


def compatible(head: str, **head_kwargs: Any) -> list[str]:
    """The backbones (as :func:`list_backbones` names them) whose feature contract fits ``head``.

    Each pair is checked on the ``meta`` device, exactly like :func:`build` would, and cached.
    """
    cat = catalog()
    head_entry = cat.lookup("head", head)
    signature_of(head_entry.factory, skip_first=True).check(head_kwargs, where=f"head {head!r}", path=None)
    options = repr(sorted(head_kwargs.items()))
    fits = []
    for entry in cat.entries("backbone"):
        key = ("compatible", head_entry.qualified_name, entry.qualified_name, options)
        if key not in cat.cache:
            cat.cache[key] = _incompatibility(head_entry, entry, head_kwargs)
        if cat.cache[key] is None:
            fits.append(cat.display_name(entry))
    return sorted(fits)


def meta_backbone(entry: Entry, kwargs: Mapping[str, Any] | None = None, *, path: str | None = None):
    """Build ``entry`` on the ``meta`` device: every shape, no memory, no initialisation cost."""
    return _make_backbone(entry, dict(kwargs or {}), path=path, meta=True)


def resolved_backbone_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every keyword argument the backbone of a built model's (or backbone's) ``config`` was called with,
    defaults included: the factory's defaults, then what the head required, then what the user gave.

    For :mod:`vertebra.weights`, which checks a named checkpoint's ``backbone_kwargs`` before fetching.
    """
    if "head" in config:
        head_name, spec, head_kwargs = _model_parts(config)
        name, given = _backbone_spec(spec, head_name, None)
        head, backbone = catalog().lookup("head", head_name), catalog().lookup("backbone", name)
        given = _plan(head, backbone, head_kwargs, given)[1]
    else:
        given = {k: v for k, v in config.items() if k != "name"}
        backbone = catalog().lookup("backbone", config.get("name"))
    return {**signature_of(backbone.factory).params, **given}


# -- internals --------------------------------------------------------------------------------------
def _model_parts(config: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(head, backbone spec, head options)`` of a model config ``{"head": ..., "backbone": ..., **options}``."""
    options = dict(config)
    return options.pop("head"), options.pop("backbone", None), options


def _build_backbone(name: Any, kwargs: Mapping[str, Any], *, weights: Any, path: str | None):
    entry = catalog().lookup("backbone", name)
    module = _attach_eager(_make_backbone(entry, dict(kwargs), path=path, meta=False))
    _set_config(module, {"name": name, **copy.deepcopy(dict(kwargs))})
    if weights is not None:
        _load_weights(module, weights)
    return module


def _build_model(head: Any, backbone: Any, head_kwargs: dict[str, Any], *, weights: Any, path: str | None):
    if not isinstance(head, str):
        raise ConfigError(f"the head must be a name like 'lraspp', got {head!r}", path=join_path(path, "head"))
    cat = catalog()
    head_entry = cat.lookup("head", head)
    head_signature = signature_of(head_entry.factory, skip_first=True)
    head_signature.check(head_kwargs, where=f"head {head!r}", path=path)
    backbone_path = join_path(path, "backbone")
    backbone_name, backbone_kwargs = _backbone_spec(backbone, head, backbone_path)
    backbone_entry = cat.lookup("backbone", backbone_name)
    signature_of(backbone_entry.factory).check(backbone_kwargs, where=f"backbone {backbone_name!r}",
                                               path=backbone_path)
    requirements, merged = _plan(head_entry, backbone_entry, head_kwargs, backbone_kwargs, path=path)
    injected = {k for k in merged if k not in backbone_kwargs}
    try:
        probe = _probe(backbone_entry, merged, path=backbone_path, injected=injected, head=head_entry)
    except VertebraError:
        raise
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta: check the real module instead
        probe = None
    if probe is not None:
        _raise_if_incompatible(head_entry, backbone_entry, requirements, probe)
        problem = _forward_problem(backbone_entry, merged, probe)
        if problem:
            raise IncompatibleError(problem)
    module = _make_backbone(backbone_entry, merged, path=backbone_path, meta=False, injected=injected,
                            head=head_entry)
    if probe is None:
        _raise_if_incompatible(head_entry, backbone_entry, requirements, module)
    _set_config(module, {"name": backbone_name, **copy.deepcopy(backbone_kwargs)})
    # Checked above, on meta: the builder runs without @requires' own check of the same rules.
    builder = getattr(head_entry.factory, "vertebra_unchecked", head_entry.factory)
    model = call_factory(builder, (module,), head_kwargs, where=f"head {head!r}", path=path,
                         signature=head_signature, owner=head_entry.source)
    _check_module(model, head_entry, "head builder")
    _attach_eager(model)
    _set_config(model, {"head": head, "backbone": copy.deepcopy(module.config), **copy.deepcopy(head_kwargs)})
    if weights is not None:
        _load_weights(model, weights)
    return model


def _backbone_spec(backbone: Any, head: str, path: str | None) -> tuple[str, dict[str, Any]]:
    if isinstance(backbone, str):
        return backbone, {}
    if isinstance(backbone, Mapping):
        spec = dict(backbone)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a backbone config needs a 'name' string, e.g. {{'name': 'efficientnet_b0', "
                              f"'output_stride': 16}}; got {dict(backbone)!r}", path=join_path(path, "name"))
        return name, spec
    if backbone is None:
        raise ConfigError(f"head {head!r} needs a backbone: pass backbone='efficientnet_b0' (a name, "
                          f"'plugin:name', or {{'name': ..., **options}}); see registry.compatible({head!r})",
                          path=path)
    raise ConfigError(f"backbone must be a name or a {{'name': ..., **options}} mapping, got "
                      f"{type(backbone).__name__}", path=path)


def _plan(head: Entry, backbone: Entry, head_kwargs: Mapping[str, Any],
          backbone_kwargs: Mapping[str, Any], *, path: str | None = None) -> tuple[Requirements, dict[str, Any]]:
    """The head's requirements and the backbone kwargs merged with them (conflicts refused).

    ``backbone_defaults`` fill in only what the user left unset: the user's value stands, and the
    requirements' other rules (``output_strides``...) judge it on the meta build.

    The requirements function validates the head options it reads (``preset``, ``levels``...), so
    it runs like the builder would: a ConfigError gets the config ``path`` prefixed.
    """
    from ..heads._base import requirements_of

    requirements = call_factory(requirements_of, (head.factory,), head_kwargs, where=f"head {head.name!r}",
                                path=path, signature=signature_of(head.factory, skip_first=True), owner=head.source)
    merged = dict(backbone_kwargs)
    accepted = signature_of(backbone.factory)
    for key, value in requirements.backbone_kwargs.items():
        if key in backbone_kwargs and backbone_kwargs[key] != value:
            raise IncompatibleError(
                f"head {head.name!r} on backbone {backbone.name!r}: the head needs the backbone built with "
                f"{key}={value!r} (for these head options), but backbone.{key}={backbone_kwargs[key]!r} was "
                f"given; remove backbone.{key} (the head sets it) or change the head's options")
        if not accepted.var_keyword and key not in accepted.params:
            raise IncompatibleError(
                f"head {head.name!r} on backbone {backbone.name!r}: the head needs the backbone built with "
                f"{key}={value!r}, but backbone {backbone.name!r} has no {key!r} argument; choose a "
                f"backbone that has (registry.compatible({head.name!r}) lists them)")
        merged[key] = value
    for key, value in requirements.backbone_defaults.items():
        if key not in merged and (accepted.var_keyword or key in accepted.params):
            merged[key] = value
    return requirements, merged


def _make_backbone(entry: Entry, kwargs: dict[str, Any], *, path: str | None, meta: bool,
                   injected: set[str] = frozenset(), head: Entry | None = None):
    with first_use_lock:  # a first import races other threads' lazy imports otherwise (plugins._lock)
        import torch

    signature = signature_of(entry.factory)
    signature.check(kwargs, where=f"backbone {entry.name!r}", path=path)
    try:
        if meta:
            with torch.device("meta"):
                module = call_factory(entry.factory, (), kwargs, where=f"backbone {entry.name!r}", path=path,
                                      signature=signature)
        else:
            module = call_factory(entry.factory, (), kwargs, where=f"backbone {entry.name!r}", path=path,
                                  signature=signature, owner=entry.source)
    except ConfigError as exc:
        key = (exc.path or "").rsplit(".", 1)[-1]
        if head is not None and key in injected:
            raise IncompatibleError(
                f"head {head.name!r} on backbone {entry.name!r}: the head needs the backbone built with "
                f"{key}={kwargs[key]!r}, which the backbone refuses ({exc}); choose another backbone "
                f"(registry.compatible({head.name!r})) or other head options") from exc
        raise
    _check_module(module, entry, "backbone factory")
    return module


def _probe(entry: Entry, kwargs: dict[str, Any], *, path: str | None, injected: set[str], head: Entry):
    """The ``meta`` build of ``entry`` with ``kwargs`` that the contract checks read, cached per backbone
    and options like those checks (every head, and every build, asking the same shares one); only
    read, never handed out.  A failing build is not cached: its error names the caller's path."""
    key = ("probe", entry.qualified_name, repr(sorted(kwargs.items())))
    cache = catalog().cache
    if key not in cache:
        cache[key] = _make_backbone(entry, dict(kwargs), path=path, meta=True, injected=injected, head=head)
    return cache[key]


def _feature_problem(head: Entry, backbone: Entry, requirements: Requirements, module: Any) -> str | None:
    """Why ``module``'s feature levels cannot serve ``head``, with the fix; ``None`` when they can.

    The one check of a head's requirements (``heads._base.requirements_problem``), here named by
    the registered names of the pair.
    """
    from ..heads._base import requirements_problem

    return requirements_problem(requirements, module, head=head.name, backbone_name=backbone.name)


def _raise_if_incompatible(head: Entry, backbone: Entry, requirements: Requirements, module: Any) -> None:
    problem = _feature_problem(head, backbone, requirements, module)
    if problem:
        raise IncompatibleError(problem)


def _incompatibility(head: Entry, backbone: Entry, head_kwargs: Mapping[str, Any]) -> str | None:
    """Why the pair does not fit (``None`` when it does); a backbone that cannot even be probed does not fit."""
    try:
        requirements, merged = _plan(head, backbone, head_kwargs, {})
        probe = _probe(backbone, merged, path="backbone", injected=set(merged), head=head)
    except VertebraError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken third-party backbone must not break the listing
        return (f"backbone {backbone.qualified_name!r} cannot be built on the meta device: "
                f"{type(exc).__name__}: {exc}")
    # Not the meta forward check: it costs a forward per backbone here, and a backbone whose forward
    # disagrees with its feature_info is refused by build() with the reason anyway.
    return _feature_problem(head, backbone, requirements, probe)


def _forward_problem(backbone: Entry, kwargs: Mapping[str, Any], probe: Any) -> str | None:
    """:func:`~._probe.feature_mismatch` of the meta ``probe``, cached per backbone and options like the
    other checks (the catalog drops it when plugins change)."""
    cat = catalog()
    key = ("forward", backbone.qualified_name, repr(sorted(kwargs.items())))
    if key not in cat.cache:
        cat.cache[key] = feature_mismatch(cat.display_name(backbone), probe)
    return cat.cache[key]


def _check_module(module: Any, entry: Entry, what: str) -> None:
    with first_use_lock:
        from torch import nn

    if not isinstance(module, nn.Module):
        raise PluginError(f"{what} {entry.qualified_name!r} from {entry.source} returned a "
                          f"{type(module).__name__}, not a torch.nn.Module")


def _attach_eager(module: Any) -> Any:
    """The eager inference speed-ups (BatchNorm folding, the ASPP shortcut), attached in place."""
    with first_use_lock:  # imports torchvision the first time: not while a lazy factory does
        from ..inference import attach_eager

    return attach_eager(module)


def _set_config(module: Any, config: dict[str, Any]) -> None:
    try:
        module.config = config
    except AttributeError as exc:
        raise PluginError(f"cannot set .config on {type(module).__name__}: {exc}; a registered module must "
                          f"leave the 'config' attribute free for vertebra") from exc


def _load_weights(model: Any, weights: Any) -> None:
    try:
        with first_use_lock:
            from ..weights import load_weights
    except ModuleNotFoundError as exc:
        if exc.name != "vertebra.weights":
            raise
        raise WeightsError("weights= needs vertebra.weights, which this installation lacks") from exc
    load_weights(model, weights)
