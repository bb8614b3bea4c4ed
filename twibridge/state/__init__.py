"""Call state: which calls are live, and what recent calls did.

``registry`` holds the interface (:class:`~twibridge.state.registry.CallRegistry`)
and the record; ``memory`` and ``redis_registry`` are its two backends.  Both
backends import the interface, never each other, and nothing here imports
them at module level: ``make_registry`` picks one at start.
"""

from __future__ import annotations

from typing import Any

from twibridge.state.registry import CallRegistry


def make_registry(config: Any) -> CallRegistry:
    """The registry ``[state] backend`` asks for."""
    if config.state.backend == "redis":
        from twibridge.state.redis_registry import RedisRegistry

        return RedisRegistry(config)
    from twibridge.state.memory import MemoryRegistry

    return MemoryRegistry(answers_keep_s=config.state.history_ttl_s, transcript_ttl_s=config.state.transcript_ttl_s)
