"""Plugin code may fail, but not end the program: ``SystemExit`` and a plugin's own ``KeyboardInterrupt``.

Discovery runs third-party code (a plugin's import, its hooks, a lazy factory's module) inside
``vertebra list`` or the first ``registry.build``.  A ``sys.exit()`` there would end the caller's
program silently with the plugin's exit code, so :func:`contained` turns it into
:class:`PluginEscape`, an ordinary ``Exception`` the loader reports as that plugin's failure.

``KeyboardInterrupt`` is ambiguous: a real Ctrl-C lands in whatever code runs at that moment, often
a plugin's slow import, and must still stop the program; a ``raise KeyboardInterrupt`` in plugin
code must not.  The two are told apart by *cause*, not by guessing: while plugin code runs in the
main thread, a SIGINT handler that chains to the one installed records that a signal really
arrived.  An interrupt with a recorded SIGINT propagates; one without (or one in another thread,
where Python never delivers signals) was raised by the plugin and fails it.  When SIGINT is not
handled by Python (``SIG_IGN``, ``SIG_DFL``), Ctrl-C raises nothing, so every interrupt is the
plugin's.

Other ``BaseException`` subclasses pass through: ``GeneratorExit`` and ``asyncio.CancelledError``
are control flow of the caller, not failures of the plugin.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

__all__ = ["PluginEscape", "contained", "describe_cause"]


class PluginEscape(Exception):
    """Plugin code raised ``SystemExit`` or (without a Ctrl-C) ``KeyboardInterrupt``; ``original`` holds it."""

    def __init__(self, original: BaseException):
        self.original = original
        super().__init__(describe_cause(original))


def describe_cause(exc: BaseException) -> str:
    """``Type: message`` of a plugin's exception, saying why an exit or interrupt did not end the program."""
    if isinstance(exc, PluginEscape):
        exc = exc.original
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        text += " (plugin code may not end the program; reported as this plugin's failure instead)"
    return text


@contextlib.contextmanager
def _sigint_watch() -> Iterator[Callable[[], bool]]:
    """Yields ``arrived()``: whether a real SIGINT reached this process while the block ran."""
    arrived: list[int] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if not callable(previous):  # another thread, SIG_IGN or SIG_DFL: Ctrl-C raises nothing here
        yield lambda: bool(arrived)
        return

    def record(signum, frame):
        arrived.append(signum)
        return previous(signum, frame)  # the program's own handler decides (by default: KeyboardInterrupt)

    signal.signal(signal.SIGINT, record)
    try:
        yield lambda: bool(arrived)
    finally:
        if signal.getsignal(signal.SIGINT) is record:  # a plugin that installed its own handler keeps it
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Run plugin code: ``SystemExit`` and a plugin-raised ``KeyboardInterrupt`` become :class:`PluginEscape`."""
    with _sigint_watch() as real_ctrl_c:
        try:
            yield
        except SystemExit as exc:
            raise PluginEscape(exc) from exc
        except KeyboardInterrupt as exc:
            if real_ctrl_c():
                raise
            raise PluginEscape(exc) from exc
