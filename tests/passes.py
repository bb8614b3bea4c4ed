"""Counting passes of Trio's run loop, for tests that say how many a message waits out.

Each pass runs every task that was ready when it began and ends in an I/O
check (``before_io_wait``); a task woken during a pass runs in the next.
Under load a pass lasts as long as all the calls' ready work, so "how many
passes between A and B" is the latency a change can cut without a clock
(issue #16, docs/benchmarks.md "Hops on the reply path").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class Passes(trio.abc.Instrument):
    """``n``: passes begun since installed (read it inside a task: the pass that task runs in)."""

    def __init__(self) -> None:
        self.n = 0

    def before_io_wait(self, timeout: float) -> None:
        self.n += 1


@contextmanager
def run_loop_passes() -> Iterator[Passes]:
    passes = Passes()
    trio.lowlevel.add_instrument(passes)
    try:
        yield passes
    finally:
        trio.lowlevel.remove_instrument(passes)
