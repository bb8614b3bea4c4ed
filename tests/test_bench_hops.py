"""bench.hops through real processes: a reply's audio waits out two passes of the run loop in serve, no more.

The count does not depend on load or the machine (one call, ``bench.fake_agent``'s
real-time pacing), so it is asserted exactly: the two task hand-offs left on the
reply path (trio-websocket's reader → the supervisor → the speaker).  A third pass
would be a regression of issue #16's first audio under load (docs/benchmarks.md,
"Hops on the reply path").
"""

from __future__ import annotations

from bench import hops


async def test_a_reply_s_audio_is_written_two_passes_after_it_arrives() -> None:
    counts = await hops.measure("realtime", duration_s=2.0)
    total = sum(counts.values())
    assert total >= 50  # 2 s of 20 ms pieces, less the quiet before the first reply
    # All but the message after a reply's end (it pairs with the next reply's audio).
    assert counts[2] >= total - 3, counts
    assert min(counts) == 2, counts
    assert "| 2 |" in hops.table("realtime", counts)
