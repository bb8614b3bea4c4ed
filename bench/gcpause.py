"""How long one full garbage collection stops the server, with the start-up heap frozen and not.

Run from the repository root::

    .venv/bin/python -m bench.gcpause

The process builds what ``twibridge serve`` holds before it serves (the
server stack imported, the runtime made from the built-in defaults), then
times ``gc.collect()`` (a generation-2 pass: every call of the process waits
for it) in rounds that alternate between the heap as it is and the heap
frozen (:func:`twibridge.server.heap.freeze_startup_heap`, what ``serve``
does since issue #16), so both are measured in the same minutes.  A figure
is the median (and the best) over the rounds.  About 2 s.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time


def _collect_ms(repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(rounds: int = 7, repeats: int = 3) -> list[dict[str, float | int | str]]:
    from twibridge.config import load_config
    from twibridge.server.app import make_runtime

    rt = make_runtime(load_config(None, {}))  # held: part of what a serving process keeps
    gc.collect()
    times: dict[str, list[float]] = {"as it is": [], "frozen": []}
    walked: dict[str, int] = {}
    for _ in range(rounds):
        for state in times:
            if state == "frozen":
                gc.freeze()
            walked[state] = len(gc.get_objects())
            times[state].extend(_collect_ms(repeats))
            gc.unfreeze()
    del rt
    return [{"heap": state, "objects walked": walked[state],
             "full collection ms (median)": round(statistics.median(ts), 2),
             "best ms": round(min(ts), 2)} for state, ts in times.items()]


def main() -> int:
    rows = run()
    print(f"# full garbage collection of a serving process's start-up heap, Python {platform.python_version()}\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
