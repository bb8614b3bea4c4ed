"""Values read back from a shared store (Redis), checked for their types.

Anything may be in Redis (another version's records, a hand-edited key, an
attacker with access): a value of the wrong shape is dropped, never passed on
to crash a caller (``twibridge calls`` once did on a record without a field).
"""

from __future__ import annotations

import json
from typing import Any

from twibridge.state.registry import CallRecord


def _json(blob: Any, kind: type) -> Any:
    """``blob`` parsed, if it is JSON of ``kind``; else None (what Redis holds is not trusted)."""
    if not blob:
        return None
    try:
        data = json.loads(blob)
    except ValueError:
        return None
    return data if isinstance(data, kind) else None


def loads(blob: Any) -> dict[str, Any] | None:
    data: dict[str, Any] | None = _json(blob, dict)
    return data


def record(blob: Any) -> CallRecord | None:
    """A live record as read back: each field of its type (anything else in Redis is dropped)."""
    data = loads(blob)
    if data is None:
        return None

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    started = data.get("started_at")
    started_at = float(started) if isinstance(started, (int, float)) and not isinstance(started, bool) else 0.0
    return CallRecord(text("call_sid"), text("stream_sid"), text("from_number"), text("to_number"),
                      started_at, text("instance"))


def loads_list(blob: Any) -> list[Any] | None:
    data: list[Any] | None = _json(blob, list)
    return data
