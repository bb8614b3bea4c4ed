"""Keep the garbage collector's full passes off the start-up heap.

Why: a running server holds ~94 000 objects from its imports and set-up
(Quart, Hypercorn, pydantic, the config, the codec tables) that live as
long as the process.  CPython's generation-2 collection walks all of them
every time it runs, and while it runs no call in the process is served:
measured 43–47 ms per full collection on a quiet core and 73–101 ms
under 50 calls (``python -m bench.gcpause``; ``docs/benchmarks.md``), long
enough to make a reply's first audio late for every call at once.
``gc.freeze()`` (the standard library's tool for exactly this) moves what
exists at start-up to a permanent generation that collections skip; what
calls allocate later is collected as before.  A full collection first, so
no garbage of the start-up is frozen with it.
"""

from __future__ import annotations

import gc

from twibridge.logs import get_logger

log = get_logger("twibridge.server")


def freeze_startup_heap() -> int:
    """Import the server stack, collect once, freeze what is left; the number of objects frozen."""
    import twibridge.server.app  # noqa: F401  (the stack's import is most of the start-up heap)

    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("server.heap_frozen", objects=frozen)
    return frozen
