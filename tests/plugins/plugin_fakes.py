"""Source text for fake plugin modules written by the ``make_plugin`` fixture."""

from __future__ import annotations


def plugin_source(backbones=(), heads=(), body: str = "") -> str:
    """Source of a plugin module registering trivial factories under the given names."""
    lines = ["from vertebra.plugins import hookimpl", "", "def factory(**kwargs):",
             "    '''A fake factory.'''", "    raise NotImplementedError", "", body, ""]
    if backbones:
        lines += ["@hookimpl", "def vertebra_register_backbones(register):"]
        lines += [f"    register({name!r}, factory)" for name in backbones]
    if heads:
        lines += ["@hookimpl", "def vertebra_register_heads(register):"]
        lines += [f"    register({name!r}, factory)" for name in heads]
    return "\n".join(lines) + "\n"
