"""The hooks a vertebra plugin implements.  This file is the plugin author's documentation.

A plugin is any module with functions marked ``@vertebra.plugins.hookimpl`` whose names are the
hooks below.  Make it discoverable with one entry point in your ``pyproject.toml``::

    [project.entry-points.vertebra]
    myplugin = "my_package.vertebra_plugin"

vertebra loads plugins lazily, on the first registry call, each in isolation: a plugin that fails to
import or raises in a hook is reported (a warning, or a :class:`~vertebra.errors.PluginError` with
``VERTEBRA_STRICT_PLUGINS=1``) and every other plugin still loads.

Without packaging, ``vertebra.registry.register_plugin(module_or_object, "name")`` loads a plugin
at run time (a failure then raises).  To test the entry point itself, :mod:`vertebra.plugins.testing`
writes a ``*.dist-info`` for your module and mounts it on ``sys.path``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

import pluggy

if TYPE_CHECKING:
    from ..weights.entry import WeightsEntry

PROJECT = "vertebra"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The ``register`` callable handed to the registration hooks."""

    def __call__(self, name: str, factory: Callable[..., Any]) -> None: ...


class RegisterWeights(Protocol):
    """The ``register`` callable handed to :func:`vertebra_register_weights`."""

    def __call__(self, entry: "WeightsEntry") -> None: ...


@hookspec
def vertebra_register_backbones(register: Register) -> None:
    """Register backbone factories: call ``register(name, factory)`` once per backbone.

    ``factory(**kwargs)`` must return a :class:`vertebra.backbones.Backbone` (or any ``nn.Module``
    with a ``feature_info`` and a ``forward`` returning ``dict[str, Tensor]`` that matches it).  Its
    keyword arguments, with defaults, are what users may pass; a factory should accept
    ``out_indices`` and ``output_stride`` to work under every head.  Names are lower-case
    identifiers (``[a-z][a-z0-9_]*``); the entry is also reachable as ``yourplugin:name``.

    To keep ``vertebra list`` fast, register a lazy reference instead of importing the module that
    defines the factory (and torch)::

        from vertebra.plugins import hookimpl, lazy

        @hookimpl
        def vertebra_register_backbones(register):
            register("my_net", lazy("my_package.backbones:my_net"))

    The module is imported on first use (build, describe, ``inspect.signature``); the
    ``SUMMARY`` column is read from the ``def``'s docstring in the source without importing it.
    A module that cannot be found fails your plugin at discovery (in isolation, like any plugin
    failure); a missing attribute or an import error surfaces as a
    :class:`~vertebra.errors.PluginError` on first use.  Listing ``__all__`` and registering
    ``lazy(f"{module}:{name}")`` per name is how vertebra registers its own families.
    """


@hookspec
def vertebra_register_backbone_namespaces(register: Register) -> None:
    """Register a name prefix whose backbones are resolved on use: ``register(prefix, resolver)``.

    A namespace serves a whole zoo without listing it at discovery: the name ``prefix:rest`` (say
    ``timm:resnet18``) reaches ``resolver("rest")`` the first time it is built or described, which
    returns the backbone factory (its keyword arguments are the options, as for
    :func:`vertebra_register_backbones`) or raises :class:`~vertebra.errors.UnknownNameError`.
    Register a lazy reference so discovery imports nothing::

        @hookimpl
        def vertebra_register_backbone_namespaces(register):
            register("mynet", lazy("my_package.zoo:resolve"))

    ``vertebra list 'mynet:*'`` calls ``resolver.list_names(pattern)`` (the part after the colon,
    an fnmatch pattern) when the resolver has that attribute; it is asked only for patterns that
    name the prefix, so plain ``vertebra list`` never imports the zoo.  A registered backbone
    ``prefix:name`` of a plugin called ``prefix`` wins over the namespace; vertebra's own bridges
    are the namespaces ``timm`` and ``torchvision`` (see docs/bring-your-own-backbone.md).
    """


@hookspec
def vertebra_register_heads(register: Register) -> None:
    """Register head builders: call ``register(name, builder)`` once per head.

    ``builder(backbone, **kwargs)`` returns the complete model (``nn.Module``) built on the given
    backbone.  Declare what the head needs from a backbone with
    :func:`vertebra.heads.requires` so the registry can check (and adapt) a backbone before any
    weights are allocated; a builder without it accepts every backbone.  ``lazy("pkg.mod:builder")``
    works here too (the requirements are read from the real builder once it is imported).
    """


@hookspec
def vertebra_register_weights(register: RegisterWeights) -> None:
    """Register named pretrained checkpoints: call ``register(WeightsEntry(...))`` once per file.

    Users then load one by name, exactly like vertebra's own torchvision checkpoints:
    ``registry.build("classifier", backbone="my_net", weights="my_net.imagenet")``::

        from vertebra.plugins import WeightsEntry, hookimpl

        @hookimpl
        def vertebra_register_weights(register):
            register(WeightsEntry(name="my_net.imagenet", url="https://example.org/my_net-1a2b3c4d.pth",
                                  sha256="1a2b3c4d...", backbone="my_net", head="classifier",
                                  num_classes=1000, metrics={"acc1": 71.3}))

    The name is ``"<architecture>.<dataset>"`` (also reachable as ``yourplugin:<name>``); ``url`` is
    ``https://`` or ``file://``; ``sha256`` is the file's digest (or a prefix of at least 8 hex
    digits), checked before the file is read, which is then read with ``weights_only=True``.
    ``backbone`` and ``head`` are the registered names the state dict fits (the load refuses a
    model built otherwise, before downloading); ``head="classifier"`` files also load into the
    bare backbone.  A checkpoint of a non-default backbone says so in ``backbone_kwargs``
    (``{"width_mult": 0.75}``): a model whose backbone was built with other values is refused before
    downloading, and users build with ``backbone={"name": "my_net", "width_mult": 0.75}``.  The file
    is cached as ``$VERTEBRA_HOME/checkpoints/<entry name>-<url hash>/<file name>``: one folder per
    entry, so a generic file name (``model.safetensors``) is fine.  An invalid entry raises while it is
    constructed, which fails your plugin in isolation like any hook error.
    """
