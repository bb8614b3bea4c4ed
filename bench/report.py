"""Markdown tables for a bench run's results (``bench.run`` builds the results dict)."""

from __future__ import annotations

from typing import Any

LATE_P99_MS = 20.0
#: The driver's own sends must stay on time too: a server that stops reading makes the caller's
#: writes back up (Twilio would lose that audio), and a starved driver measures nothing.
DRIVER_LATE_P99_MS = 20.0


#: Reply latency a caller waits for, p95 (issue #16): the echo agent's / the fake OpenAI's 500 ms of
#: end-of-turn quiet plus what load adds.  An agent leg may add its own hop: 50 ms more.
REPLY_P95_MS, AGENT_REPLY_P95_MS = 600.0, 650.0
#: Servers whose replies come over an agent leg (the fake OpenAI Realtime / Gemini Live server).
AGENT_LEG_SERVERS = frozenset({"twibridge-openai", "twilio-sample", "twibridge-gemini"})


def reply_limit_ms(row: dict[str, Any]) -> float:
    return AGENT_REPLY_P95_MS if row["server"] in AGENT_LEG_SERVERS else REPLY_P95_MS


def holds(row: dict[str, Any]) -> bool:
    """A call count "holds": every call served, no frame lost, caller-side lateness and driver pacing in
    bounds, and (where the script has replies to time) reply p95 within :func:`reply_limit_ms`."""
    d = row["driver"]
    ok = d["connected"] - sum(d["failed"].values())
    reply_p95 = d["reply_latency_ms"].get("p95") if row.get("script", "echo") == "echo" else None
    return (ok == row["calls"] and not d["failed"] and d["silent_calls"] == 0 and row["lost"] == 0
            and (d["lateness_ms"]["p99"] or 0.0) < LATE_P99_MS
            and (d["driver_send_late_ms"]["p99"] or 0.0) < DRIVER_LATE_P99_MS
            and (reply_p95 is None or reply_p95 <= reply_limit_ms(row)))


def why_not(row: dict[str, Any]) -> str:
    """The first condition of :func:`holds` that a point missed (for the tables)."""
    d = row["driver"]
    if d["connected"] - sum(d["failed"].values()) != row["calls"] or d["failed"] or d["silent_calls"]:
        return "calls"
    if row["lost"] != 0:
        return "lost"
    if (d["lateness_ms"]["p99"] or 0.0) >= LATE_P99_MS:
        return "late"
    if (d["driver_send_late_ms"]["p99"] or 0.0) >= DRIVER_LATE_P99_MS:
        return "driver"
    return "reply p95"


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def capacity_table(rows: list[dict[str, Any]]) -> str:
    """One line per point, by N (refinement points join their N's place)."""
    body = []
    for r in sorted(rows, key=lambda r: r["calls"]):
        d = r["driver"]
        lat = d["lateness_ms"]
        rss_call = None
        if d.get("server_rss_kb") and d.get("server_rss_idle_kb") and r["calls"]:
            rss_call = (d["server_rss_kb"] - d["server_rss_idle_kb"]) / r["calls"]
        body.append([
            r["server"], r["calls"], f"{d['connected'] - sum(d['failed'].values())}/{r['calls']}",
            lat["p50"], lat["p99"], lat["max"], d["late_chunks_over_20ms"], _f(r["lost"], 0),
            d.get("server_cpu_pct"), _f(rss_call, 0), d.get("driver_cpu_pct"), d.get("other_cpu_pct"),
            d["driver_send_late_ms"]["p99"], d["reply_latency_ms"]["p50"], d["reply_latency_ms"].get("p95"),
            "yes" if r["holds"] else f"**no** ({why_not(r)})",
        ])
    return table(["server", "N", "calls ok", "late p50 ms", "late p99 ms", "late max ms", "chunks >20 ms",
                  "frames lost", "server CPU %", "RSS/call KB", "driver CPU %", "other load %", "driver late p99 ms",
                  "reply p50 ms", "reply p95 ms", "holds"], body)


def capacity(rows: list[dict[str, Any]], server: str) -> tuple[int | None, bool]:
    """(largest N that held, whether the largest N tried held too: then it is a lower bound)."""
    mine = [r for r in rows if r["server"] == server]
    held = [r["calls"] for r in mine if r["holds"]]
    if not held:
        return None, False
    return max(held), max(held) == max(r["calls"] for r in mine)


def cpu_per_call(rows: list[dict[str, Any]], server: str, at: int = 50) -> float | None:
    """Server CPU % per call at the largest N ≤ ``at`` (a load every server holds: comparable)."""
    mine = [r for r in rows if r["server"] == server and r["calls"] <= at and r["driver"].get("server_cpu_pct")]
    if not mine:
        return None
    r = max(mine, key=lambda r: r["calls"])
    return float(r["driver"]["server_cpu_pct"]) / int(r["calls"])


def capacity_summary(rows: list[dict[str, Any]], servers: list[str], baseline: str) -> str:
    base, base_open = capacity(rows, baseline)
    base_cpu = cpu_per_call(rows, baseline)
    body = []
    for s in servers:
        cap, open_ = capacity(rows, s)
        cpu = cpu_per_call(rows, s)
        body.append([s, (f"≥{cap}" if open_ else _f(cap)),
                     "1.00×" if s == baseline else (_ratio(cap, base) + (" (vs a lower bound)" if base_open else "")),
                     _f(cpu, 2), "1.00×" if s == baseline else _ratio(base_cpu, cpu)])
    limit = reply_limit_ms({"server": servers[0]}) if servers else REPLY_P95_MS
    return table(["server", f"capacity (late p99 < {LATE_P99_MS:g} ms, 0 lost, reply p95 ≤ {limit:g} ms)",
                  f"capacity vs {baseline}",
                  "CPU % per call (N=50)", f"{baseline} CPU ÷ this"], body)


def workers_table(rows: list[dict[str, Any]]) -> str:
    """The capped workers points: each worker's cap and throttling next to the capacity columns."""
    body = []
    for r in sorted(rows, key=lambda r: (r["server"], r["calls"])):
        d = r["driver"]
        cg = r.get("cgroups") or {}
        throttled = cg.get("throttled_pct") or []
        per_worker = r.get("calls_per_worker") or []
        ok = d["connected"] - sum(d["failed"].values())
        body.append([
            f"`workers {r.get('workers', '?')}`", r["calls"], f"{ok}/{r['calls']}",
            d["lateness_ms"]["p99"], _f(r["lost"], 0), d.get("server_cpu_pct"),
            " / ".join(_f(t) for t in throttled) or "–", " / ".join(str(c) for c in per_worker) or "–",
            d.get("driver_cpu_pct"), d["driver_send_late_ms"]["p99"], "yes" if r["holds"] else "**no**",
        ])
    return table(["server", "N", "calls ok", "late p99 ms", "frames lost", "server CPU % (all processes)",
                  "throttled % of periods (per worker)", "calls per worker", "driver CPU %", "driver late p99 ms",
                  "holds"], body)


def workers_summary(rows: list[dict[str, Any]], cap: dict[str, Any], goal: float = 1.8) -> str:
    """One line: each capacity, their ratio against ``goal``, and the cap they were measured under."""
    c1, open1 = capacity(rows, "twibridge-workers1")
    c2, open2 = capacity(rows, "twibridge-workers2")
    how = (f"Each worker process capped at {cap['pct']:g} % of one core (cgroup v{cap['cgroup_version']}, "
           f"{cap['quota_us']} µs per {cap['period_us']} µs); supervisor and driver uncapped")
    if not c1 or not c2:
        return f"**Capacity `workers 1`: {_f(c1)}, `workers 2`: {_f(c2)}: no ratio.** {how}."
    ratio = c2 / c1
    if open1:
        verdict = "undetermined: `workers 1` held at every N tried"
    elif ratio >= goal:
        verdict = "met"
    elif open2:
        verdict = "undetermined: `workers 2` held at every N tried"
    else:
        verdict = "not met"
    return (f"**Capacity `workers 1`: {'≥' if open1 else ''}{c1}, `workers 2`: {'≥' if open2 else ''}{c2}; "
            f"ratio {'≥' if open2 and not open1 else ''}{ratio:.2f}× (goal ≥ {goal:g}×: {verdict}).** {how}.")


def latency_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        d = r["driver"]
        fl, nl = d["frame_latency_ms"], d["newest_frame_latency_ms"]
        body.append([r["server"], r["calls"], fl["p50"], fl["p99"], nl["p50"], nl["p99"], fl["n"],
                     d.get("server_cpu_pct")])
    return table(["server", "N", "frame→echo p50 ms", "frame→echo p99 ms", "newest frame p50 ms",
                  "newest frame p99 ms", "samples", "server CPU %"], body)


def barge_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        d = r["driver"]
        cl = d["clear_latency_ms"]
        body.append([r["server"], r.get("trigger", ""), r["calls"], d.get("barges_sent") or "–", d["clears"],
                     cl["p50"], cl["p99"], cl["max"], d.get("server_cpu_pct")])
    return table(["server", "trigger → clear", "N", "triggers sent", "clears", "p50 ms", "p99 ms", "max ms",
                  "server CPU %"], body)


def first_audio_table(rows: list[dict[str, Any]]) -> str:
    """Per agent pacing and N: the bridge against the direct forwarder of the same run.

    "later frames" is the agent's send → arrival of every other frame of a
    reply: it includes pacing where the agent sends ahead of real time (the
    forwarder does not pace: it hands Twilio everything at once).  "gaps" are
    holes in the caller's playback that the bridge caused (the audio was
    sent by the agent before the previous audio had played out).
    """
    body = []
    for r in rows:
        d = r["driver"]
        fa, lf, gap = d["first_audio_ms"], d["later_frame_ms"], d["bridge_gap_ms"]
        audio_s = (lf["n"] + fa["n"]) * 0.02
        body.append([r["server"], r.get("pacing", ""), r["calls"], fa["n"], fa["p50"], fa["p99"], lf["p50"], lf["p99"],
                     gap["n"], gap["max"], _f(d["media_in"] / audio_s if audio_s else None),
                     _f(d.get("marks_in", 0) / audio_s if audio_s else None), d.get("server_cpu_pct")])
    return table(["server", "agent", "N", "replies", "first audio p50 ms", "first audio p99 ms",
                  "later frames p50 ms", "later frames p99 ms", "gaps", "gap max ms", "media msgs / s of audio",
                  "marks / s of audio", "server CPU %"], body)


def gemini_table(rows: list[dict[str, Any]], gemini: str = "twibridge-gemini",
                 openai: str = "twibridge-openai") -> str:
    """Per N: ``provider = "gemini"`` (transcoding both ways) next to ``"openai"`` (μ-law through) of the same run.

    CPU is twibridge's process only; the fake's own CPU is its own column
    (it must stay far from a core, or it, not twibridge, is the limit).  The
    extra CPU per call is what Gemini's transcoding (and its JSON) costs over
    OpenAI's at that N.
    """
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        by[(r["server"], r["calls"])] = r  # a later point at the same N (none in this section) wins

    def cell(r: dict[str, Any] | None) -> list[Any]:
        if r is None:
            return ["–", None, None, None, None, None]
        d = r["driver"]
        cpu = d.get("server_cpu_pct")
        return ["yes" if r["holds"] else f"**no** ({why_not(r)})", d["lateness_ms"]["p99"],
                d["reply_latency_ms"].get("p95"), cpu, _f(cpu / r["calls"] if cpu is not None else None, 2),
                d.get("aux_cpu_pct")]

    body = []
    for n in sorted({r["calls"] for r in rows}):
        g, o = by.get((gemini, n)), by.get((openai, n))
        gc, oc = cell(g), cell(o)
        extra = None
        if g is not None and o is not None and g["driver"].get("server_cpu_pct") is not None \
                and o["driver"].get("server_cpu_pct") is not None:
            extra = (g["driver"]["server_cpu_pct"] - o["driver"]["server_cpu_pct"]) / n
        other = max((r["driver"].get("other_cpu_pct") or 0.0) for r in (g, o) if r is not None)
        body.append([n, *gc, *oc, _f(extra, 2), other])
    return table(["N", "gemini holds", "late p99 ms", "reply p95 ms", "twibridge CPU %", "CPU %/call", "fake CPU %",
                  "openai holds", "late p99 ms", "reply p95 ms", "twibridge CPU %", "CPU %/call", "fake CPU %",
                  "gemini extra CPU %/call", "other load % (max)"], body)


def startup_table(rows: list[dict[str, Any]]) -> str:
    # Ratios of the best runs: on a shared VM the minimum is the least disturbed figure.
    base = next((r["min_ms"] for r in rows if r["what"] == "python -c pass"), None)
    return table(["command", "median ms", "min ms", "runs", "min vs python -c pass"],
                 [[r["what"], r["median_ms"], r["min_ms"], r["runs"], _ratio(r["min_ms"], base)] for r in rows])


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULTS.json``: the tables again from a saved run (rules as of now)."""
    import json
    import sys

    from bench.run import print_report

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        res = json.load(fh)
    for section in ("capacity", "agent", "gemini", "workers", "latency", "barge", "first_audio"):
        for row in res.get(section, []):
            row["holds"] = holds(row)
    print_report(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
