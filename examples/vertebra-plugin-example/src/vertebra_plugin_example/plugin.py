"""The plugin module named by the entry point: only hook implementations, no import-time work."""

from vertebra.plugins import hookimpl


@hookimpl
def vertebra_register_backbones(register):
    # Imported here, not at module top: vertebra imports this module during discovery, and the
    # backbone pulls in torch; deferring keeps discovery cheap for plugins that are never used.
    from .tiny import tiny_convnet

    register("tiny_convnet", tiny_convnet)
