"""The whole bench, one command: ``.venv/bin/python -m bench`` (``--quick`` for a ~2 min run).

Every figure is measured side by side with its baseline in the same run and
reported as a ratio, because a shared VM's speed drifts from run to run.
Servers and the driver are separate processes (the driver is
:mod:`bench.driver`); everything runs on loopback, every loop is bounded and
every child is killed at the end.  Tables go to stdout (Markdown), progress
to stderr, and ``--json PATH`` keeps the raw results.  The method is in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

from bench import cgroups, report
from bench.procs import PY, ServerProcess, bench_env, run_driver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATE_P99_MS = report.LATE_P99_MS
#: The sweep stops for a server after this many consecutive N that do not hold.
MAX_MISSES = 2
#: After the coarse sweep, each server's capacity is narrowed by bisection to within this many calls.
REFINE_TO = 10
#: The capped workers sweep (full run): ``workers 1`` at k and ``workers 2`` at 2k, interleaved, k from
#: WORKERS_START in steps of WORKERS_STEP, at most WORKERS_MAX_POINTS per worker count (~19 s each).
WORKERS_START, WORKERS_STEP, WORKERS_MAX_POINTS = 20, 5, 12
#: Each worker's CPU cap: % of one core, over a short period so a throttled worker stalls briefly.
WORKER_CPU_PCT, WORKER_CPU_PERIOD_US = 30.0, 10_000
FAKE_KEY = "sk-bench-0123456789abcdef"
GEMINI_KEY = "AIzaBench0123456789abcdefghijklmnopqrst"
#: The Gemini section's N (full run; ``--quick``: 10 only).  ~20 s a point, two servers.
GEMINI_NS = (10, 25, 50, 75, 100)


def progress(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


@dataclass
class Plan:
    quick: bool
    duration_s: float
    sweep: list[int]
    extend_to: int
    latency_ns: list[int]
    barge_n: int
    agent_sweep: list[int]
    #: Uncapped one process vs ``workers 2`` (the fallback without cgroups).
    workers_ns: list[int]
    #: Capped ``workers 1`` vs ``workers 2``: these N for each, or [] for the capacity search.
    workers_capped_ns: list[int]
    startup_runs: int
    sections: list[str] = field(default_factory=list)
    #: 0: no caps, the uncapped comparison.
    worker_cpu_pct: float = WORKER_CPU_PCT
    worker_cpu_period_us: int = WORKER_CPU_PERIOD_US
    #: The first-audio section: these N for each agent pacing and server.
    first_audio_ns: list[int] = field(default_factory=lambda: [1, 50])
    #: ``--only gemini``: these N for ``provider = "gemini"`` and ``"openai"`` alike (each stops at its first miss).
    gemini_ns: list[int] = field(default_factory=lambda: list(GEMINI_NS))


def make_plan(quick: bool, sections: list[str], worker_cpu_pct: float = WORKER_CPU_PCT) -> Plan:
    if quick:
        return Plan(True, 5.0, [10, 50], 50, [1, 10], 10, [10], [50], [10, 20], 3, sections, worker_cpu_pct,
                    gemini_ns=[10])
    return Plan(False, 12.0, [10, 25, 50, 100, 150, 200], 300, [1, 50], 50, [25, 50, 100, 150, 200],
                [150, 200], [], 5, sections, worker_cpu_pct)


#: The echo script's cycle (1.5 s tone, 2.5 s silence): calls started evenly over it answer evenly spread.
ECHO_CYCLE_S = 4.0


def ramp_for(n: int) -> float:
    return min(ECHO_CYCLE_S, max(0.5, n * 0.02))


# ---------------------------------------------------------------- server kinds


@dataclass
class Kind:
    argv: list[str]
    env: dict[str, str]
    #: Extra processes to start first (e.g. the fake OpenAI server): a callable returning the env to add.
    before: Callable[[trio.Nursery], Awaitable[tuple[dict[str, str], list[ServerProcess]]]] | None = None
    #: The server logs no ``call.ended`` with ``frames_in``: count inbound frames at the fake agent.
    counts_at_agent: bool = False
    #: ``twibridge.server.workers --workers N``: wait for N ``server.listening`` lines; the workers can be capped.
    workers: int = 0


async def _fake_realtime(nursery: trio.Nursery) -> tuple[dict[str, str], list[ServerProcess]]:
    fake = ServerProcess([PY, "-m", "bench.fake_realtime", "--key", FAKE_KEY], bench_env(), "fake-realtime")
    await fake.start(nursery)
    url = fake.url.replace("http://", "ws://") + "/v1/realtime"
    return {"TWIBRIDGE_AGENT_PROVIDER": "openai", "TWIBRIDGE_AGENT_OPENAI_API_KEY": FAKE_KEY,
            "TWIBRIDGE_AGENT_OPENAI_URL": url, "BENCH_FAKE_URL": url, "OPENAI_API_KEY": FAKE_KEY}, [fake]


async def _fake_gemini(nursery: trio.Nursery) -> tuple[dict[str, str], list[ServerProcess]]:
    from bench.fake_gemini import PATH

    fake = ServerProcess([PY, "-m", "bench.fake_gemini", "--key", GEMINI_KEY], bench_env(), "fake-gemini")
    await fake.start(nursery)
    url = fake.url.replace("http://", "ws://") + PATH
    return {"TWIBRIDGE_AGENT_PROVIDER": "gemini", "TWIBRIDGE_AGENT_GEMINI_API_KEY": GEMINI_KEY,
            "TWIBRIDGE_AGENT_GEMINI_URL": url, "BENCH_FAKE_URL": url}, [fake]


def kinds() -> dict[str, Kind]:
    serve = [PY, "-m", "twibridge", "serve", "--host", "127.0.0.1", "--port", "0"]
    provider_barge = {"TWIBRIDGE_TURNS_BARGE_IN": "provider"}
    return {
        "twibridge": Kind(serve, bench_env()),
        "twibridge-on-tws": Kind([PY, "-m", "bench.bridge_server", "--transport", "tws"], bench_env()),
        "twibridge-on-raw": Kind([PY, "-m", "bench.bridge_server", "--transport", "raw"], bench_env()),
        "baseline": Kind([PY, "-m", "bench.baseline_echo", "--mode", "echo"], bench_env()),
        "twibridge-pass": Kind([PY, "-m", "bench.bridge_server", "--agent", "passthrough"], bench_env(**provider_barge)),
        "baseline-pass": Kind([PY, "-m", "bench.baseline_echo", "--mode", "passthrough"], bench_env()),
        **{f"twibridge-workers{k}": Kind([PY, "-m", "twibridge.server.workers", "--workers", str(k), "--host",
                                          "127.0.0.1", "--port", "0"], bench_env(), workers=k) for k in (1, 2)},
        "twibridge-openai": Kind(serve, bench_env(), before=_fake_realtime),
        # The least a bridge on twibridge's stack costs with that agent leg (goal 3's floor): bench/floor_openai.py.
        "floor-openai": Kind([PY, "-m", "bench.floor_openai"], bench_env(), before=_fake_realtime, counts_at_agent=True),
        "twibridge-gemini": Kind(serve, bench_env(), before=_fake_gemini),
    }


# -------------------------------------------------------------------- one point


async def measure(kind_name: str, n: int, plan: Plan, script: str = "echo", barge_every_s: float = 0.0,
                  kind: Kind | None = None, caps: cgroups.CpuGroups | None = None,
                  ramp_s: float | None = None) -> dict[str, Any]:
    """One server at ``n`` calls; with ``caps``, each of its worker processes first goes into its own group.

    Calls start spread over ``ramp_s`` (default :func:`ramp_for`).
    """
    kind = kind or kinds()[kind_name]
    prefix = os.urandom(4).hex()
    extra: list[ServerProcess] = []
    row_extra: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        try:
            env = dict(kind.env)
            if kind.before is not None:
                add, extra = await kind.before(nursery)
                env.update(add)
            srv = ServerProcess(kind.argv, env, kind_name)
            extra.append(srv)
            await srv.start(nursery)
            if kind.workers:
                await srv.wait_for(lambda l: l.get("event") == "server.listening", 30, count=kind.workers)
            stats: list[dict[str, int]] = []
            if caps is not None and kind.workers:
                row_extra["cgroups"] = _cap_workers(srv, kind.workers, caps)
                stats = caps.stats()
            aux = extra[0] if len(extra) > 1 else None
            d = await run_driver(srv.ws_url, n, pid=srv.pid, prefix=prefix, duration_s=plan.duration_s,
                                 ramp_s=ramp_for(n) if ramp_s is None else ramp_s, script=script, barge_every_s=barge_every_s,
                                 aux_pid=aux.pid if aux else 0)
            if caps is not None and "cgroups" in row_extra:
                row_extra["cgroups"]["throttled_pct"] = _throttled_pct(stats, caps.stats())[:kind.workers]
                # A worker restarted during the run came back uncapped: the point is not like for like.
                row_extra["cgroups"]["restarted"] = len(srv.events("workers.child_died"))
            ok = d["connected"] - sum(d["failed"].values())
            ended: list[dict[str, Any]] = []
            if kind.counts_at_agent and aux is not None:
                # No per-call summary from this server: count the frames its agent leg received.
                await trio.sleep(1.0)
                os.kill(aux.pid, signal.SIGUSR1)  # agent sockets still open a second after the calls ended
                await aux.wait_for(lambda l: l.get("event") == "fake.totals", 5)
                row_extra = {"agent_sockets_left_open": aux.events("fake.totals")[-1]["live"]}
                await srv.stop()
                await aux.stop()
                totals = aux.events("fake.totals")
                lost = d["frames_sent"] - int(totals[-1]["appends"]) if totals else None
            else:
                with trio.move_on_after(10):
                    while len(ended) < ok:
                        ended = srv.events("call.ended", "CA" + prefix)
                        await trio.sleep(0.2)
                lost = d["frames_sent"] - sum(int(e.get("frames_in", 0)) for e in ended) if len(ended) >= ok else None
                if kind.workers:
                    row_extra["calls_per_worker"] = [sum(1 for e in ended if e.get("worker") == i)
                                                     for i in range(kind.workers)]
        finally:
            for p in reversed(extra):
                await p.stop()
            nursery.cancel_scope.cancel()
    lat = d["lateness_ms"]
    row = {"server": kind_name, "workers": kind.workers, "calls": n, "script": script, "driver": d, "lost": lost,
           "outcomes": _count(e.get("outcome", "?") for e in ended), **row_extra}
    row["holds"] = holds = report.holds(row)
    progress(f"{kind_name:>20} N={n:<4} late p99={_fmt(lat['p99'])} ms lost={lost} "
             f"cpu={_fmt(d.get('server_cpu_pct'))}% driver late p99={_fmt(d['driver_send_late_ms']['p99'])} ms "
             f"{'holds' if holds else 'MISS'}"
             + (f" calls/worker={row_extra['calls_per_worker']}" if "calls_per_worker" in row_extra else "")
             + (f" throttled%={row_extra['cgroups']['throttled_pct']}" if "cgroups" in row_extra else "")
             + (" A WORKER RESTARTED UNCAPPED" if row_extra.get("cgroups", {}).get("restarted") else ""))
    return row


def _cap_workers(srv: ServerProcess, n: int, caps: cgroups.CpuGroups) -> dict[str, Any]:
    """Worker i (a child of the supervisor ``srv.pid``) into group i; the supervisor stays uncapped.

    Called once all N workers logged ``server.listening``: they are the
    supervisor's children then.  Their logged pids must be the same set.
    """
    kids = cgroups.child_pids(srv.pid)
    logged = {int(l["worker"]): int(l["pid"]) for l in srv.events("server.listening")
              if "worker" in l and "pid" in l}
    if len(kids) != n or (logged and sorted(logged.values()) != kids):
        raise RuntimeError(f"workers of pid {srv.pid}: children {kids}, listening {logged}")
    pids = [logged[i] for i in range(n)] if sorted(logged) == list(range(n)) else kids
    for i, pid in enumerate(pids):
        caps.place(i, pid)
    members = caps.members()[:n]
    progress("capped: " + ", ".join(f"worker {i} pid {pid} → {os.path.basename(caps.paths[i])} "
                                    f"(cgroup.procs {members[i]})" for i, pid in enumerate(pids)))
    return {"pids": pids, "groups": caps.paths[:n], "members": members}


def _throttled_pct(before: list[dict[str, int]], after: list[dict[str, int]]) -> list[float | None]:
    """Per group: % of its active quota periods in which the cap stopped it."""
    out: list[float | None] = []
    for a, b in zip(before, after):
        periods = b.get("nr_periods", 0) - a.get("nr_periods", 0)
        out.append(round(100 * (b.get("nr_throttled", 0) - a.get("nr_throttled", 0)) / periods, 1)
                   if periods > 0 else None)
    return out


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.1f}"


async def sweep(servers: dict[str, Kind], ns: list[int], plan: Plan,
                extend_to: int | None = None, max_misses: int = MAX_MISSES,
                refine_capacity: bool = True) -> list[dict[str, Any]]:
    """Each N for every server in turn (interleaved, so a noisy spell hits them alike).

    A server drops out after ``max_misses`` (:data:`MAX_MISSES`) consecutive N that do not
    hold; while any server still holds at the last N, N grows by 100 up to
    ``extend_to``.  A full run then narrows each capacity (:func:`refine`).
    """
    rows: list[dict[str, Any]] = []
    misses = {name: 0 for name in servers}
    todo = list(ns)
    while todo:
        n = todo.pop(0)
        for name, kind in servers.items():
            if misses[name] >= max_misses:
                continue
            row = await measure(name, n, plan, kind=kind)
            rows.append(row)
            misses[name] = 0 if row["holds"] else misses[name] + 1
        alive = [name for name in servers if misses[name] == 0]
        if not todo and alive and extend_to and n < extend_to:
            todo.append(min(extend_to, n + 100))
    if not plan.quick and refine_capacity:
        await refine(servers, rows, plan)
    return rows


def bracket(rows: list[dict[str, Any]], server: str) -> tuple[int, int] | None:
    """(largest N that held, the smallest larger N that did not), if both were tried."""
    held, _ = report.capacity(rows, server)
    if held is None:
        return None
    above = [r["calls"] for r in rows if r["server"] == server and not r["holds"] and r["calls"] > held]
    return (held, min(above)) if above else None


async def refine(servers: dict[str, Kind], rows: list[dict[str, Any]], plan: Plan) -> None:
    """Bisect between each server's last holding N and first missing N, to :data:`REFINE_TO`.

    The coarse steps (100 → 150) make capacities and their ratios jumpy; a
    few midpoints, interleaved across servers, give a figure within
    ``REFINE_TO`` calls.  At most six rounds (the gap halves each round).
    """
    for _ in range(6):
        todo: dict[str, int] = {}
        for name in servers:
            b = bracket(rows, name)
            if b is not None and b[1] - b[0] > REFINE_TO:
                mid = (b[0] + b[1]) // 2 // 5 * 5
                todo[name] = mid if b[0] < mid < b[1] else (b[0] + b[1]) // 2
        if not todo:
            return
        for name, n in todo.items():
            rows.append(await measure(name, n, plan, kind=servers[name]))


# ---------------------------------------------------------------- the sections


def startup(plan: Plan) -> list[dict[str, Any]]:
    progress("start-up timings")
    twibridge = os.path.join(os.path.dirname(PY), "twibridge")
    cmd_tw = [twibridge] if os.path.exists(twibridge) else [PY, "-m", "twibridge"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write('[twilio]\nauth_token = "0123456789abcdef0123456789abcdef"\n')
        cfg_path = fh.name
    env = bench_env()
    cases = [("python -c pass", [PY, "-c", "pass"]), ("twibridge --help", [*cmd_tw, "--help"]),
             ("twibridge validate-config", [*cmd_tw, "validate-config", cfg_path])]
    rows = []
    try:
        for what, argv in cases:
            times = []
            for _ in range(plan.startup_runs):
                t = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                               timeout=60)
                times.append((time.perf_counter() - t) * 1000)
            rows.append({"what": what, "median_ms": statistics.median(times), "min_ms": min(times),
                         "runs": len(times)})
        times = []
        for _ in range(plan.startup_runs):
            times.append(trio.run(_time_to_ready, [*cmd_tw, "serve", "--host", "127.0.0.1", "--port", "0"], env))
        rows.append({"what": "twibridge serve → server.listening", "median_ms": statistics.median(times),
                     "min_ms": min(times), "runs": len(times)})
    finally:
        os.unlink(cfg_path)
    return rows


async def _time_to_ready(argv: list[str], env: dict[str, str]) -> float:
    srv = ServerProcess(argv, env, "serve")
    async with trio.open_nursery() as nursery:
        try:
            t = time.perf_counter()
            await srv.start(nursery)
            return (time.perf_counter() - t) * 1000
        finally:
            await srv.stop()
            nursery.cancel_scope.cancel()


def codec(quick: bool = False) -> tuple[str, list[dict[str, Any]]]:
    progress("codec table (bench.codec)")
    try:
        from bench import codec as codec_bench
    except ImportError as exc:
        return f"(bench.codec not available: {exc})", []
    rows = codec_bench.run(repeat=3) if quick else codec_bench.run()
    return codec_bench.format_table(rows), rows


async def workers_section(plan: Plan) -> dict[str, Any]:
    """``workers 1`` vs ``workers 2``, each worker process capped alike (see :mod:`bench.cgroups`).

    The caps keep the driver's share of a small VM free, so the ratio of the
    two capacities is the scaling.  Calls start spread over one echo cycle
    whatever N: with the N-proportional ramp, one worker at N got its replies
    bunched twice as densely as each of two workers at 2N (a first run read a
    flattering 3.0x from that).  Without cgroups (not root, no cpu
    controller, or ``--worker-cpu-pct 0``) it says so and runs the uncapped
    one process vs ``workers 2`` comparison instead, where the driver can starve.
    """
    caps: cgroups.CpuGroups | None = None
    reason = "--worker-cpu-pct 0"
    if plan.worker_cpu_pct > 0:
        try:
            caps = cgroups.CpuGroups(2, plan.worker_cpu_pct, plan.worker_cpu_period_us).open()
        except cgroups.Unavailable as exc:
            reason = str(exc)
    if caps is None:
        note = (f"cgroups not available ({reason}): workers uncapped, so this is one process vs `workers 2` "
                "sharing the machine with the driver, which can starve: no fair scaling figure.")
        progress(note)
        rows = []
        for k in ("twibridge", "twibridge-workers2"):
            for n in plan.workers_ns:
                rows.append(await measure(k, n, plan))
        return {"workers": rows, "workers_note": note}
    try:
        progress(f"workers: {caps.describe()}; groups {', '.join(caps.paths)}")
        info = {"pct": caps.pct, "period_us": caps.period_us, "quota_us": caps.quota_us,
                "cgroup_version": caps.hierarchy.version, "groups": list(caps.paths)}
        one, two = "twibridge-workers1", "twibridge-workers2"
        rows = []
        if plan.workers_capped_ns:  # --quick: fixed N, interleaved
            for n in plan.workers_capped_ns:
                for k in (one, two):
                    rows.append(await measure(k, n, plan, caps=caps, ramp_s=ECHO_CYCLE_S))
        else:
            rows += await _climb_paired(one, two, plan, caps)
        return {"workers": rows, "workers_cap": info}
    finally:
        left = caps.close()
        progress(f"cgroups NOT removed: {left}" if left else "cgroups removed")


async def _climb_paired(one: str, two: str, plan: Plan, caps: cgroups.CpuGroups) -> list[dict[str, Any]]:
    """``one`` at k calls, then ``two`` at 2k (the same load per worker), k up by WORKERS_STEP.

    Interleaved so that a noisy spell on the shared VM hits both alike
    (measured back to back, two runs read 1.56x and 2.25x).  A worker count
    drops out after MAX_MISSES misses in a row; the climb ends when both have.
    """
    rows: list[dict[str, Any]] = []
    misses = {one: 0, two: 0}
    k = WORKERS_START
    while any(m < MAX_MISSES for m in misses.values()):
        for name, n in ((one, k), (two, 2 * k)):
            if misses[name] < MAX_MISSES and sum(r["server"] == name for r in rows) < WORKERS_MAX_POINTS:
                rows.append(await measure(name, n, plan, caps=caps, ramp_s=ECHO_CYCLE_S))
                misses[name] = 0 if rows[-1]["holds"] else misses[name] + 1
            else:
                misses[name] = MAX_MISSES
        k += WORKERS_STEP
    return rows


async def run_async(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"plan": vars(plan).copy()}
    if "capacity" in plan.sections:
        names = ["baseline", "twibridge"] + ([] if plan.quick else ["twibridge-on-tws", "twibridge-on-raw"])
        out["capacity"] = await sweep({k: kinds()[k] for k in names}, plan.sweep, plan, extend_to=plan.extend_to)
    if "latency" in plan.sections:
        rows = []
        for n in plan.latency_ns:
            for k in ("baseline-pass", "twibridge-pass"):
                rows.append(await measure(k, n, plan, script="passthrough"))
        out["latency"] = rows
    if "barge" in plan.sections:
        rows = []
        for k, trig in (("baseline-pass", "BRG! frame"), ("twibridge-pass", "provider signal")):
            row = await measure(k, plan.barge_n, plan, script="passthrough", barge_every_s=2.0)
            row["trigger"] = trig
            rows.append(row)
        for k in ("baseline", "twibridge"):
            row = await measure(k, plan.barge_n, plan, script="echo-barge")
            row["trigger"] = "speech onset (incl. 300 ms debounce)"
            rows.append(row)
        out["barge"] = rows
    if "workers" in plan.sections:
        out.update(await workers_section(plan))
    if "first-audio" in plan.sections:
        from bench import first_audio

        out["first_audio"] = await first_audio.section(plan)
    if "pickup" in plan.sections:
        from bench import pickup

        out["pickup"] = await pickup.section(plan.quick)
    if "agent" in plan.sections:
        from bench import sample_leg

        servers = {"twibridge-openai": kinds()["twibridge-openai"], "floor-openai": kinds()["floor-openai"]}
        sample = sample_leg.kind()
        if sample is not None:
            servers["twilio-sample"] = sample
        out["agent_note"] = sample_leg.note(sample is not None)
        out["agent"] = await sweep(servers, plan.agent_sweep, plan)
    if "gemini" in plan.sections:
        # Gemini calls per process (issue #20), next to the OpenAI provider at the same N in the same run:
        # each server stops at its first N that does not hold; no refinement (a bounded run, ~20 s a point).
        pair = ("twibridge-gemini", "twibridge-openai")
        out["gemini"] = await sweep({k: kinds()[k] for k in pair}, plan.gemini_ns, plan, max_misses=1,
                                    refine_capacity=False)
    return out


def print_report(res: dict[str, Any]) -> None:
    p = print
    p(f"# twibridge bench ({'quick' if res['plan']['quick'] else 'full'}), {time.strftime('%Y-%m-%d %H:%M')}, "
      f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    if "startup" in res:
        p("## Start-up\n\n" + report.startup_table(res["startup"]) + "\n")
    if "capacity" in res:
        p("## Capacity: echo agent, 50 frames/s in, 100 ms chunks + marks out\n")
        p(report.capacity_table(res["capacity"]) + "\n")
        servers = [s for s in ("baseline", "twibridge", "twibridge-on-tws", "twibridge-on-raw")
                   if any(r["server"] == s for r in res["capacity"])]
        p(report.capacity_summary(res["capacity"], servers, "baseline") + "\n")
    if "agent" in res:
        p("## With an agent leg (fake OpenAI Realtime, separate process)\n")
        if res["agent"]:
            p(report.capacity_table(res["agent"]) + "\n")
            servers = sorted({r["server"] for r in res["agent"]}, reverse=True)  # the sample (if any) first
            p(report.capacity_summary(res["agent"], servers, servers[0]) + "\n")
        if res.get("agent_note"):
            p(res["agent_note"] + "\n")
    if "gemini" in res:
        p("## Gemini calls per process: `provider = \"gemini\"` (fake Live API, transcoding both ways) "
          "vs `\"openai\"` (fake Realtime, μ-law through)\n")
        if res["gemini"]:
            p(report.gemini_table(res["gemini"]) + "\n")
            p(report.capacity_summary(res["gemini"], ["twibridge-openai", "twibridge-gemini"], "twibridge-openai")
              + "\n")
            p(report.capacity_table(res["gemini"]) + "\n")
    if "workers" in res and res.get("workers_cap"):
        p(f"## `workers 2` vs `workers 1`, each worker capped at {res['workers_cap']['pct']:g} % of one core\n")
        p(report.workers_table(res["workers"]) + "\n")
        p(report.workers_summary(res["workers"], res["workers_cap"]) + "\n")
    elif "workers" in res:
        p("## One process vs `workers 2`\n")
        if res.get("workers_note"):
            p(res["workers_note"] + "\n")
        p(report.capacity_table(res["workers"]) + "\n")
    if "latency" in res:
        p("## Bridge latency (passthrough agent)\n\n" + report.latency_table(res["latency"]) + "\n")
    if "barge" in res:
        p("## Barge-in: trigger → `clear` on the wire\n\n" + report.barge_table(res["barge"]) + "\n")
    if "first_audio" in res:
        p("## Time to first audio: agent's send → `media` on the Twilio socket (`provider = \"websocket\"`)\n\n"
          + report.first_audio_table(res["first_audio"]) + "\n")
    if "pickup" in res:
        from bench.pickup import pickup_table

        p("## Pickup: the stream's `start` → the first audio the caller hears (`simulate-call --server`)\n\n"
          + pickup_table(res["pickup"]) + "\n")
    if "codec_table" in res:
        p("## Codec (bench.codec)\n\n" + res["codec_table"] + "\n")


SECTIONS = ["startup", "codec", "capacity", "latency", "barge", "first-audio", "pickup", "workers", "agent"]
#: Sections only ``--only`` runs (never part of the default run).
OPT_IN = ["gemini"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (~2 min): small N, short calls")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections of {SECTIONS + OPT_IN} (default: all but {OPT_IN}), "
                        "or soak (never part of the default run)")
    p.add_argument("--gemini-ns", help=f"gemini: comma-separated N (default {','.join(map(str, GEMINI_NS))})")
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--worker-cpu-pct", type=float, default=WORKER_CPU_PCT,
                   help="workers section: cap each worker process at this %% of one core (cgroups, needs root; "
                        f"{WORKER_CPU_PERIOD_US // 1000} ms period); 0 = uncapped one process vs workers 2")
    p.add_argument("--soak-minutes", type=float, default=30.0, help="soak: how long (default 30)")
    p.add_argument("--soak-echo-calls", type=int, default=100, help="soak: echo-agent calls (default 100)")
    p.add_argument("--soak-openai-calls", type=int, default=50, help="soak: OpenAI-fake calls (default 50)")
    p.add_argument("--soak-call-s", type=float, default=60.0, help="soak: audio per call, seconds (default 60)")
    p.add_argument("--soak-png", default="docs/img/soak.png", help="soak: the plot (needs matplotlib)")
    p.add_argument("--soak-cpu-pct", type=float, default=0.0,
                   help="soak: cap each bridge at this %% of one core (cgroups, needs root): a starved bridge")
    p.add_argument("--soak-history", type=int, default=0,
                   help="soak: call summaries each bridge keeps (0: as shipped, 200): RSS grows until it is full")
    args = p.parse_args(argv)
    min_pct = 100 * cgroups.MIN_QUOTA_US / WORKER_CPU_PERIOD_US
    if args.worker_cpu_pct and not min_pct <= args.worker_cpu_pct <= 100:
        p.error(f"--worker-cpu-pct: 0 or {min_pct:g}..100")
    os.chdir(REPO)
    sections = [s for s in args.only.split(",") if s]
    bad = set(sections) - set(SECTIONS) - set(OPT_IN) - {"soak"}
    if bad:
        p.error(f"unknown sections: {sorted(bad)}")
    if sections == ["soak"]:
        return soak_main(args)
    plan = make_plan(args.quick, sections, args.worker_cpu_pct)
    if args.gemini_ns:
        plan.gemini_ns = [int(n) for n in args.gemini_ns.split(",") if n]
    t0 = time.monotonic()
    res: dict[str, Any] = {"plan": vars(plan).copy()}
    # SIGINT/SIGTERM: trio raises in the run; every child is stopped in a finally.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if "startup" in sections:
        res["startup"] = startup(plan)
    if "codec" in sections:
        res["codec_table"], res["codec"] = codec(plan.quick)
    res.update(trio.run(run_async, plan))
    res["elapsed_s"] = round(time.monotonic() - t0, 1)
    print_report(res)
    print(f"_Run time: {res['elapsed_s']:.0f} s._")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return 0


def soak_main(args: argparse.Namespace) -> int:
    """``--only soak``: the soak alone (bench.soak); exit 0 only if it passes."""
    from bench import soak

    if args.soak_png:
        os.makedirs(os.path.dirname(args.soak_png) or ".", exist_ok=True)
    plan = soak.SoakPlan(minutes=args.soak_minutes, echo_calls=args.soak_echo_calls,
                         openai_calls=args.soak_openai_calls, call_s=args.soak_call_s, png=args.soak_png or None,
                         cpu_pct=args.soak_cpu_pct, history=args.soak_history)
    res = trio.run(soak.soak, plan)
    print(f"# twibridge soak, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}\n")
    print(soak.table(res["summary"]) + "\n")
    print(soak.after_lines(res["summary"]) + "\n")
    if res.get("png"):
        print(f"Plot: {res['png']}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return 0 if all(e["passes"] for e in res["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
