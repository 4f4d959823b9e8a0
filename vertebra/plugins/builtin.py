"""vertebra's own families and named checkpoints, registered through the hooks a third-party plugin uses.

Each family module lists its factories in ``__all__``; the hooks read that list from the module's
source (:func:`~vertebra.plugins._lazy.module_exports`) and register a
:func:`~vertebra.plugins.lazy` reference per name, so discovery and ``vertebra list`` import no
family module (and no torch); a family is imported when one of its entries is first built,
described or inspected.  A family module that raises while importing therefore fails at that first
use, with a :class:`~vertebra.errors.PluginError` naming the entry.

A family module that does not exist at all (a partial checkout, a package built without it) is
skipped with a :class:`~vertebra.plugins.PluginWarning` so the other families stay usable (with
``VERTEBRA_STRICT_PLUGINS=1`` it fails the built-in plugin instead); any
other error inside a family module fails the whole built-in plugin like any plugin's error would.
"""

from __future__ import annotations

import warnings

from ._lazy import lazy, module_exports
from ._loader import PluginWarning, Settings
from .hookspecs import hookimpl

BACKBONE_MODULES = (
    "vertebra.backbones.efficientnet",
    "vertebra.backbones.efficientnet_v2",
    "vertebra.backbones.mobilenetv3",
)
# Name prefixes resolved on use (vertebra_register_backbone_namespaces): a whole zoo per prefix,
# neither listed nor imported at discovery.
BACKBONE_NAMESPACES = {
    "timm": "vertebra.bridges.timm:resolve",
    "torchvision": "vertebra.bridges.torchvision:resolve",
}
HEAD_MODULES = (
    "vertebra.heads.classifier",
    "vertebra.heads.detection",
    "vertebra.heads.segmentation",
    "vertebra.heads.onestage",
    "vertebra.heads.smp_decoders",
    "vertebra.heads.smp_more",
)


def _register_all(register, module_names) -> None:
    for module_name in module_names:
        try:
            names = module_exports(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name or Settings.from_env().strict:
                raise
            warnings.warn(f"built-in family module {module_name} is missing; its entries are not "
                          f"registered (the rest of vertebra works)", PluginWarning, stacklevel=2)
            continue
        for name in names:
            register(name, lazy(f"{module_name}:{name}"))


@hookimpl
def vertebra_register_backbones(register) -> None:
    _register_all(register, BACKBONE_MODULES)


@hookimpl
def vertebra_register_backbone_namespaces(register) -> None:
    for prefix, reference in BACKBONE_NAMESPACES.items():
        register(prefix, lazy(reference))


@hookimpl
def vertebra_register_heads(register) -> None:
    _register_all(register, HEAD_MODULES)


@hookimpl
def vertebra_register_weights(register) -> None:
    from ..weights.torchvision import TORCHVISION_ENTRIES

    for entry in TORCHVISION_ENTRIES:
        register(entry)
