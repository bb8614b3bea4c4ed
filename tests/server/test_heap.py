"""The start-up heap is frozen so full collections skip it (twibridge/server/heap.py)."""

from __future__ import annotations

import gc

from twibridge.server.heap import freeze_startup_heap


def test_freezing_leaves_the_start_up_heap_out_of_every_collection() -> None:
    before = len(gc.get_objects())
    try:
        frozen = freeze_startup_heap()
        # The server stack is most of it (the collection first frees what was garbage).
        assert frozen == gc.get_freeze_count() > max(10_000, before // 2)
        assert len(gc.get_objects()) < before // 100  # what a full collection still walks
        late = [[i] for i in range(1000)]  # what calls allocate afterwards is tracked as before
        assert gc.is_tracked(late[0]) and len(gc.get_objects()) >= 1000
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
