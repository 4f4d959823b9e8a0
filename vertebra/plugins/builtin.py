"""vertebra's own families, registered through the same hooks a third-party plugin uses.

Family modules are imported inside the hooks, not at import time, so nothing is registered or
imported by ``import vertebra``.  Each family module lists its factories in ``__all__``.
"""

from __future__ import annotations

from importlib import import_module

from .hookspecs import hookimpl

BACKBONE_MODULES = (
    "vertebra.backbones.efficientnet",
    "vertebra.backbones.efficientnet_v2",
    "vertebra.backbones.mobilenetv3",
)
HEAD_MODULES = (
    "vertebra.heads.classifier",
    "vertebra.heads.detection",
    "vertebra.heads.segmentation",
    "vertebra.heads.smp_decoders",
)


def _register_all(register, module_names) -> None:
    for module_name in module_names:
        module = import_module(module_name)
        for name in module.__all__:
            register(name, getattr(module, name))


@hookimpl
def vertebra_register_backbones(register) -> None:
    _register_all(register, BACKBONE_MODULES)


@hookimpl
def vertebra_register_heads(register) -> None:
    _register_all(register, HEAD_MODULES)
