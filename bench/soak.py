"""The soak: ``python -m bench --only soak [--soak-minutes 30]``.

Two bridges run side by side for the whole soak, each the production app under
:mod:`bench.soak_server` (it logs its RSS, open fds, live Trio tasks and calls
every ``sample_s``). One answers with the echo agent; the other uses the
OpenAI provider against the fake Realtime server (:mod:`bench.fake_realtime`,
its own process).  Calls end and start all the time: each bridge's calls are
split over ``lanes`` driver lanes, and each lane runs back-to-back batches of
``call_s``-long calls (:mod:`bench.driver`, a Twilio-like caller in its own
process).  The lanes are offset by ``call_s / lanes``, so a batch ends and a
new one starts every few seconds while the total stays near the target.

The warm-up lasts a quarter of the run (at most 5 minutes) or, per bridge,
until its call registry holds the full history it keeps for ``twibridge calls``
(200 summaries as shipped), whichever is later: until then each call adds a
summary by design (:func:`steady_from`).
It passes when, after the warm-up, no resource grows by more than 5 %, every
call is served, no frame is lost, and caller-side lateness p99 stays under
:data:`bench.report.LATE_P99_MS`.  Growth is the slope over time of a
least-squares fit ``value = a + b·calls + c·t`` over the post-warm-up samples,
as a share of the mean: the number of live calls moves with the churn, and
RSS, fds and tasks all follow it, so the fit separates "more calls right now"
from "more left behind".  With matplotlib (the ``bench`` extra), a PNG of RSS,
fds and tasks over time is written.

After the last batch, each bridge gets (bounded) until its live calls are 0,
then one more sample: its fds and tasks *after the calls* against its first
sample, and (SIGUSR1, :mod:`bench.soak_server`) where its leftover tasks
wait.  ``cpu_pct`` caps each bridge at that share of one core (cgroups, root):
a starved bridge on purpose, the condition of the leak in issue #22 (5).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from bench import cgroups, report
from bench.procs import PY, ServerProcess, bench_env, run_driver

GROWTH_LIMIT_PCT = 5.0
#: How long a (starved) bridge gets after the last batch to end its calls.
AFTER_WAIT_S = 120.0
METRICS = ("rss_kb", "fds", "tasks")
DUMP_EVENTS = ("soak.tasks", "soak.fds", "soak.ws_streams")


@dataclass
class SoakPlan:
    minutes: float = 30.0
    echo_calls: int = 100
    openai_calls: int = 50
    #: Audio each call sends (s); calls start over ``ramp_s`` within a batch.
    call_s: float = 60.0
    ramp_s: float = 4.0
    lanes: int = 4
    sample_s: float = 5.0
    #: Samples before this are left out of the growth figures (default: a quarter of the run, at most 5 min).
    warmup_s: float | None = None
    png: str | None = None
    #: Cap each bridge at this % of one core (cgroups; 0: uncapped).
    cpu_pct: float = 0.0
    #: Call summaries each bridge's registry keeps (0: as shipped, 200); see ``bench.soak_server --history``.
    history: int = 0

    @property
    def steady_until(self) -> float:
        """No batch starts after this (s into the run): the last samples are the wind-down."""
        return self.minutes * 60 - self.ramp_s - self.call_s

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(300.0, self.minutes * 60 / 4)


def progress(msg: str) -> None:
    import sys

    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


async def _lane(kind: str, srv: ServerProcess, n: int, offset_s: float, t0: float, end: float, plan: SoakPlan,
                runs: list[dict[str, Any]]) -> None:
    await trio.sleep_until(t0 + offset_s)
    while trio.current_time() + plan.ramp_s + plan.call_s < end:
        prefix = os.urandom(4).hex()
        started = trio.current_time() - t0
        try:
            d = await run_driver(srv.ws_url, n, pid=srv.pid, prefix=prefix, duration_s=plan.call_s,
                                 ramp_s=plan.ramp_s, script="echo")
        except (RuntimeError, trio.TooSlowError) as exc:
            # Recorded (the verdict fails) and the lane goes on: the samples so far are what tells why.
            progress(f"{kind} lane at {started:.0f} s: the driver failed: {exc!r}"[:600])
            runs.append({"kind": kind, "prefix": prefix, "t_s": round(started, 1), "calls": n, "error": repr(exc)})
            continue
        if d.get("overran") or d.get("stalled"):
            # Where the bridge's tasks wait now (its SIGUSR1 dump, kept in the JSON under "dumps").
            progress(f"{kind} lane at {started:.0f} s: overran={d.get('overran')}, "
                     f"stalled sends: {d.get('stalled')}")
            os.kill(srv.pid, signal.SIGUSR1)
        runs.append({"kind": kind, "prefix": prefix, "t_s": round(started, 1), "calls": n, "driver": d})


def _split(total: int, lanes: int) -> list[int]:
    return [total // lanes + (1 if i < total % lanes else 0) for i in range(lanes)]


def growth(samples: list[dict[str, Any]], metric: str, warmup_s: float, until_s: float) -> dict[str, Any]:
    """Trend of ``metric`` between the warm-up and ``until_s`` (after it no batch starts: the calls wind
    down), with the live-call count factored out (see the module doc)."""
    post = [s for s in samples if warmup_s <= s["t_s"] <= until_s]
    if len(post) < 4:
        return {"samples": len(post), "growth_pct": None}
    t = np.array([s["t_s"] for s in post], dtype=float)
    calls = np.array([s["calls"] + s.get("pending", 0) for s in post], dtype=float)
    y = np.array([s[metric] for s in post], dtype=float)
    columns = [np.ones_like(t), t] + ([calls] if np.ptp(calls) > 0 else [])
    coef, *_ = np.linalg.lstsq(np.column_stack(columns), y, rcond=None)
    span = float(t[-1] - t[0])
    mean = float(y.mean())
    k = max(1, len(post) // 5)
    return {"samples": len(post), "span_s": round(span, 1), "mean": round(mean, 1),
            "first": statistics.median(float(v) for v in y[:k]), "last": statistics.median(float(v) for v in y[-k:]),
            "max": float(y.max()), "per_call": round(float(coef[2]), 2) if len(coef) > 2 else None,
            "growth_pct": round(100 * float(coef[1]) * span / mean, 2) if mean else None}


def steady_from(samples: list[dict[str, Any]], warmup_s: float) -> tuple[float, float | None]:
    """When this bridge's steady window starts, and when its call history was full (None: never).

    The in-process registry keeps the last ``history_max`` call summaries for ``twibridge calls``
    (:mod:`twibridge.state.memory`): until it is full each call adds one, by design, and RSS climbs; after,
    each call replaces one.  So the warm-up lasts ``warmup_s`` or until the history is full, whichever is
    later.  A history that never fills leaves the warm-up as it is, and its growth counts."""
    full = next((float(s["t_s"]) for s in samples
                 if s.get("history_max") and s.get("history", 0) >= s["history_max"]), None)
    return (max(warmup_s, full) if full is not None else warmup_s), full


#: What each ``soak.sample`` line of :mod:`bench.soak_server` carries that the verdict and plot read.
SAMPLE_KEYS = ("rss_kb", "fds", "tasks", "calls", "pending", "cpu_s", "history", "history_max")


def _samples(srv: ServerProcess, t0_mono: float | None) -> list[dict[str, Any]]:
    lines = srv.events("soak.sample")
    if not lines:
        return []
    base = t0_mono if t0_mono is not None else float(lines[0]["mono"])
    return [{"t_s": round(float(l["mono"]) - base, 1),
             **{k: l[k] for k in SAMPLE_KEYS if k in l}}
            for l in lines]


def cpu_pct(samples: list[dict[str, Any]], warmup_s: float, until_s: float) -> float | None:
    """The bridge's mean CPU (% of one core) between the warm-up and the wind-down."""
    post = [s for s in samples if warmup_s <= s["t_s"] <= until_s and "cpu_s" in s]
    if len(post) < 2 or post[-1]["t_s"] <= post[0]["t_s"]:
        return None
    cpu_s = float(post[-1]["cpu_s"]) - float(post[0]["cpu_s"])
    return round(100 * cpu_s / (float(post[-1]["t_s"]) - float(post[0]["t_s"])), 1)


async def _lost(srv: ServerProcess, run: dict[str, Any]) -> int | None:
    d = run["driver"]
    ok = d["connected"] - sum(d["failed"].values())
    with trio.move_on_after(10):
        while len(srv.events("call.ended", "CA" + run["prefix"])) < ok:
            await trio.sleep(0.2)
    ended = srv.events("call.ended", "CA" + run["prefix"])
    if len(ended) < ok:
        return None
    return int(d["frames_sent"]) - sum(int(e.get("frames_in", 0)) for e in ended)


async def _after_calls(srv: ServerProcess) -> dict[str, Any]:
    """The bridge once its calls are over (the sample after its first with no call left) against its
    first sample, and where its leftover tasks wait (the top groups of its SIGUSR1 dump)."""
    def idle_samples() -> int:
        return sum(1 for l in srv.events("soak.sample") if l["calls"] == 0 and l["pending"] == 0)

    before = idle_samples()
    with trio.move_on_after(AFTER_WAIT_S):
        # A new sample with no call, then the next one: the last hang-ups' connections close meanwhile.
        await srv.wait_for(lambda l: l.get("event") == "soak.sample", AFTER_WAIT_S,
                           count=len(srv.events("soak.sample")) + 1)
        while idle_samples() <= before:
            await trio.sleep(1)
        await srv.wait_for(lambda l: l.get("event") == "soak.sample", AFTER_WAIT_S,
                           count=len(srv.events("soak.sample")) + 1)
    samples = srv.events("soak.sample")
    last, first = samples[-1], samples[0]
    dumps = len(srv.events("soak.ws_streams"))
    os.kill(srv.pid, signal.SIGUSR1)
    await srv.wait_for(lambda l: l.get("event") == "soak.ws_streams", 30, count=dumps + 1)
    tasks = srv.events("soak.tasks")[-1]
    return {"calls": last["calls"], "fds": last["fds"], "tasks": last["tasks"], "rss_kb": last["rss_kb"],
            "first_fds": first["fds"], "first_tasks": first["tasks"], "fd_kinds": srv.events("soak.fds")[-1]["kinds"],
            "ws_streams": srv.events("soak.ws_streams")[-1]["streams"], "task_groups": tasks["groups"][:5]}


async def soak(plan: SoakPlan) -> dict[str, Any]:
    from bench.run import _fake_realtime

    runs: list[dict[str, Any]] = []
    servers: dict[str, ServerProcess] = {}
    extra: list[ServerProcess] = []
    out: dict[str, Any] = {"plan": {**vars(plan), "warmup_s": plan.warmup, "steady_until_s": plan.steady_until}}
    caps = cgroups.CpuGroups(2, plan.cpu_pct).open() if plan.cpu_pct > 0 else None
    async with trio.open_nursery() as nursery:
        try:
            fake_env, extra = await _fake_realtime(nursery)
            argv = [PY, "-m", "bench.soak_server", "--sample-s", str(plan.sample_s), "--history", str(plan.history)]
            servers["echo"] = await ServerProcess(argv, bench_env(), "soak-echo").start(nursery)
            servers["openai"] = await ServerProcess(argv, bench_env(**fake_env), "soak-openai").start(nursery)
            if caps is not None:
                for i, srv in enumerate(servers.values()):
                    caps.place(i, srv.pid)
                progress(f"each bridge capped: {caps.describe()}")
            t0 = trio.current_time()
            end = t0 + plan.minutes * 60
            progress(f"{plan.minutes:g} min: {plan.echo_calls} echo + {plan.openai_calls} OpenAI-fake calls, "
                     f"{plan.lanes} lanes each, {plan.call_s:g} s calls, warm-up {plan.warmup:g} s")
            async with trio.open_nursery() as lanes:
                for kind, total in (("echo", plan.echo_calls), ("openai", plan.openai_calls)):
                    for i, n in enumerate(_split(total, plan.lanes)):
                        if n:
                            lanes.start_soon(_lane, kind, servers[kind], n, i * plan.call_s / plan.lanes, t0, end,
                                             plan, runs)
            for run in runs:
                run["lost"] = await _lost(servers[run["kind"]], run) if "driver" in run else None
            for kind, srv in servers.items():
                out.setdefault("after", {})[kind] = await _after_calls(srv)
            # The sample log's clock is the server's trio clock: align on each server's own first sample.
            for kind, srv in servers.items():
                out.setdefault("samples", {})[kind] = _samples(srv, None)
                out.setdefault("dumps", {})[kind] = [l for l in srv.lines if l.get("event") in DUMP_EVENTS]
                stalled = {sid for r in runs if r["kind"] == kind for sid in r.get("driver", {}).get("stalled", [])}
                out.setdefault("stalled_calls", {})[kind] = {
                    sid: [l for l in srv.lines if l.get("call_sid") == sid] for sid in sorted(stalled)}
        finally:
            for srv in (*servers.values(), *extra):
                await srv.stop()
            if caps is not None:
                out["cpu_stat"] = caps.stats()
                caps.close()
            nursery.cancel_scope.cancel()
    out["runs"] = runs
    out["summary"] = summarize(out, plan)
    if plan.png:
        out["png"] = plot(out, plan, out["summary"])
    return out


def summarize(out: dict[str, Any], plan: SoakPlan) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind, samples in out["samples"].items():
        mine = [r for r in out["runs"] if r["kind"] == kind and "driver" in r]
        errors = [r for r in out["runs"] if r["kind"] == kind and "error" in r]
        drivers = [r["driver"] for r in mine]
        failed = sum(sum(d["failed"].values()) for d in drivers)
        lost = [r["lost"] for r in mine]
        start, full = steady_from(samples, plan.warmup)
        entry: dict[str, Any] = {
            "steady_from_s": start, "history_full_s": full,
            "history_max": max((int(s.get("history_max", 0)) for s in samples), default=0),
            "batches": len(mine), "calls": sum(r["calls"] for r in mine), "failed": failed,
            "driver_errors": len(errors), "stalled": [sid for d in drivers for sid in d.get("stalled", [])],
            "silent_calls": sum(d["silent_calls"] for d in drivers),
            "lost_frames": None if any(x is None for x in lost) else sum(x for x in lost if x is not None),
            "late_p99_ms_max": max((d["lateness_ms"]["p99"] or 0.0 for d in drivers), default=None),
            "late_chunks_over_20ms": sum(d["late_chunks_over_20ms"] for d in drivers),
            "driver_late_p99_ms_max": max((d["driver_send_late_ms"]["p99"] or 0.0 for d in drivers), default=None),
            "live_calls_mean": round(statistics.mean(s["calls"] for s in samples), 1) if samples else None,
            # What the run asked of the machine: this bridge, and its drivers (sum over the lanes' mean).
            "cpu_pct": cpu_pct(samples, start, plan.steady_until),
            "driver_cpu_pct": _drivers_cpu(drivers, plan.lanes),
            **{m: growth(samples, m, start, plan.steady_until) for m in METRICS},
        }
        entry["after_calls"] = out.get("after", {}).get(kind)
        grown = [entry[m]["growth_pct"] for m in METRICS]
        entry["flat"] = all(g is not None and g <= GROWTH_LIMIT_PCT for g in grown)
        entry["passes"] = bool(entry["flat"] and failed == 0 and not errors and entry["silent_calls"] == 0
                               and entry["lost_frames"] == 0
                               and (entry["late_p99_ms_max"] or 0.0) < report.LATE_P99_MS
                               and (entry["driver_late_p99_ms_max"] or 0.0) < report.DRIVER_LATE_P99_MS)
        summary[kind] = entry
    return summary


def _drivers_cpu(drivers: list[dict[str, Any]], lanes: int) -> float | None:
    """The drivers' CPU (% of one core) while all lanes run: each batch's own, averaged, times the lanes."""
    own = [float(d["driver_cpu_pct"]) for d in drivers if d.get("driver_cpu_pct") is not None]
    return round(statistics.mean(own) * lanes, 1) if own else None


def plot(out: dict[str, Any], plan: SoakPlan, summary: dict[str, Any] | None = None) -> str | None:
    """RSS, fds and tasks over time, per bridge; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return None
    assert plan.png is not None
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    labels = {"rss_kb": "RSS (MiB)", "fds": "open fds", "tasks": "Trio tasks", "calls": "live calls"}
    for kind, samples in out["samples"].items():
        t = [s["t_s"] / 60 for s in samples]
        start = (summary or {}).get(kind, {}).get("steady_from_s")
        for ax, key in zip(axes, ("rss_kb", "fds", "tasks", "calls")):
            scale = 1024 if key == "rss_kb" else 1
            line, = ax.plot(t, [s[key] / scale for s in samples], label=f"{kind} bridge", linewidth=1)
            if start is not None and start > plan.warmup:
                # This bridge's warm-up ran on until its call history was full (see steady_from).
                ax.axvline(start / 60, color=line.get_color(), linestyle="--", linewidth=0.8)
            ax.set_ylabel(labels[key])
    for ax in axes:
        ax.axvspan(0, plan.warmup / 60, color="grey", alpha=0.15, linewidth=0)
        ax.axvspan(plan.steady_until / 60, plan.minutes, color="grey", alpha=0.15, linewidth=0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    axes[0].set_title(f"twibridge soak: {plan.echo_calls} echo + {plan.openai_calls} OpenAI-fake calls, "
                      f"{plan.minutes:g} min (grey: warm-up, wind-down;\n"
                      "dashed: a bridge's warm-up lasting until its call history is full)")
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(plan.png, dpi=90)
    plt.close(fig)
    return plan.png


def table(summary: dict[str, Any]) -> str:
    rows = ["| bridge | batches | calls | live (mean) | CPU % (bridge / its drivers) | failed | lost frames "
            "| late p99 (max) | driver late p99 (max) | steady from | RSS growth | fds growth | tasks growth "
            "| passes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def g(m: dict[str, Any]) -> str:
        # The trend (calls factored out), then the raw medians of the first and last fifth after warm-up.
        return "–" if m["growth_pct"] is None else f"{m['growth_pct']:+.1f} % ({m['first']:g} → {m['last']:g})"

    for kind, e in summary.items():
        late = "–" if e["late_p99_ms_max"] is None else f"{e['late_p99_ms_max']:.1f} ms"
        driver = "–" if e["driver_late_p99_ms_max"] is None else f"{e['driver_late_p99_ms_max']:.1f} ms"
        failed = f"{e['failed']}" + (f" + {e['driver_errors']} driver errors" if e.get("driver_errors") else "")
        cpu = f"{e.get('cpu_pct', '–')} / {e.get('driver_cpu_pct', '–')}"
        start = "–" if e.get("steady_from_s") is None else f"{e['steady_from_s'] / 60:.1f} min"
        if e.get("history_max") and e.get("history_full_s") is None:
            start += " (history not full)"
        rows.append(f"| {kind} | {e['batches']} | {e['calls']} | {e['live_calls_mean']} | {cpu} | {failed} "
                    f"| {e['lost_frames']} | {late} | {driver} | {start} "
                    f"| {g(e['rss_kb'])} | {g(e['fds'])} | {g(e['tasks'])} | {'yes' if e['passes'] else 'NO'} |")
    return "\n".join(rows)


def after_lines(summary: dict[str, Any]) -> str:
    """Per bridge: fds and tasks once its calls were over, against its first sample."""
    lines = []
    for kind, e in summary.items():
        a = e.get("after_calls")
        if a:
            lines.append(f"- {kind}: after the calls ({a['calls']} live): fds {a['first_fds']} → {a['fds']}, "
                         f"tasks {a['first_tasks']} → {a['tasks']}")
    return "\n".join(lines)
