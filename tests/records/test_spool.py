"""twibridge.records.spool: the schedule, atomic durable files, states by rename."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from twibridge.records.spool import BACKOFF_S, Entry, Spool, next_delay


def test_schedule_is_bounded_about_an_hour() -> None:
    assert len(BACKOFF_S) + 1 == 8 and 3600 <= sum(BACKOFF_S) <= 4500
    assert next_delay(0) is None and next_delay(8) is None
    for n, want in enumerate(BACKOFF_S, start=1):
        got = next_delay(n)
        assert got is not None and want * 0.9 <= got <= want * 1.1
    assert next_delay(1, retry_after=120) == 120  # Retry-After honoured when longer
    assert next_delay(1, retry_after=10**6) == max(BACKOFF_S)  # up to the longest wait


def test_put_move_find_sweep(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.ensure()
    e = Entry.new("msg_1", "https://x/h", b'{"a":1}', "CA/../1", time.time())
    assert "/" not in e.name and e.name.startswith("CA1_")
    spool.put(e)
    assert stat.S_IMODE(spool.path(e).stat().st_mode) == 0o600
    assert not [p for p in spool.dir("pending").iterdir() if p.name.startswith(".")]  # no temp file left
    (loaded,) = spool.load()
    assert loaded == e
    e.attempts = 3
    spool.move(e, "failed")
    assert spool.find("CA/../1") == [("failed", e)]
    spool.move(e, "delivered", frm="failed")
    old = time.time() - 8 * 86400
    os.utime(spool.path(e, "delivered"), (old, old))
    assert spool.sweep(time.time()) == 1 and spool.find("CA/../1") == []


def test_a_corrupt_file_is_set_aside(tmp_path: Path, captured_logs: object) -> None:
    spool = Spool(tmp_path)
    spool.ensure()
    (spool.dir("pending") / "CA1_x.json").write_text("{half")
    assert spool.load() == []
    assert [p.name for p in spool.dir("failed").iterdir()] == ["CA1_x.json"]
