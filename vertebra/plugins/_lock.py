"""The one lock behind every first use: plugin discovery and every lazy factory's import.

Why one lock and not one per factory: two factories of *different* modules that share a dependency
(``vertebra.heads.detection`` and ``vertebra.backbones.efficientnet`` both import ``torchvision``)
would otherwise import it from two threads at once.  Python's per-module import locks do not make
that safe for packages with import cycles: one thread gets ``_DeadlockError`` or a "partially
initialized module" ``ImportError``, and the half-imported package left in ``sys.modules`` breaks
later calls even from one thread.  Holding a single lock while any first use imports means only
one thread is ever inside a first-use import; the others wait, then find the modules complete.

It is re-entrant because first uses nest: discovery registers lazy factories, resolving a factory
may import a plugin module that asks the registry for something, and the registry resolves other
factories while it holds the lock.

The known limit: code that runs *at import time of a module outside this lock* (in another thread)
and calls the registry waits for this lock, while the lock holder may wait for that module's
import lock; keep registry calls out of module top levels.
"""

from __future__ import annotations

import threading

__all__ = ["first_use_lock"]

first_use_lock = threading.RLock()
