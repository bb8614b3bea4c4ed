"""Markdown tables for a bench run's results (``bench.run`` builds the results dict)."""

from __future__ import annotations

from typing import Any

LATE_P99_MS = 20.0


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
    body = []
    for r in rows:
        d = r["driver"]
        lat = d["lateness_ms"]
        rss_call = None
        if d.get("server_rss_kb") and d.get("server_rss_idle_kb") and r["calls"]:
            rss_call = (d["server_rss_kb"] - d["server_rss_idle_kb"]) / r["calls"]
        body.append([
            r["server"], r["calls"], f"{d['connected'] - sum(d['failed'].values())}/{r['calls']}",
            lat["p50"], lat["p99"], lat["max"], d["late_chunks_over_20ms"], _f(r["lost"], 0),
            d.get("server_cpu_pct"), _f(rss_call, 0), d.get("driver_cpu_pct"), d.get("other_cpu_pct"),
            d["driver_send_late_ms"]["p99"], d["reply_latency_ms"]["p50"],
            "yes" if r["holds"] else "**no**",
        ])
    return table(["server", "N", "calls ok", "late p50 ms", "late p99 ms", "late max ms", "chunks >20 ms",
                  "frames lost", "server CPU %", "RSS/call KB", "driver CPU %", "other load %", "driver late p99 ms",
                  "reply p50 ms", "holds"], body)


def capacity(rows: list[dict[str, Any]], server: str) -> tuple[int | None, bool]:
    """(largest N that held, whether the largest N tried held too: then it is a lower bound)."""
    mine = [r for r in rows if r["server"] == server]
    held = [r["calls"] for r in mine if r["holds"]]
    if not held:
        return None, False
    return max(held), max(held) == max(r["calls"] for r in mine)


def capacity_summary(rows: list[dict[str, Any]], servers: list[str], baseline: str) -> str:
    base, base_open = capacity(rows, baseline)
    body = []
    for s in servers:
        cap, open_ = capacity(rows, s)
        cpu = [r["driver"].get("server_cpu_pct") for r in rows if r["server"] == s and r["holds"]]
        n = [r["calls"] for r in rows if r["server"] == s and r["holds"]]
        per_call = cpu[-1] / n[-1] if cpu and n and cpu[-1] else None
        body.append([s, (f"≥{cap}" if open_ else _f(cap)), _f(per_call, 2),
                     "1.00×" if s == baseline else (_ratio(cap, base) + (" (vs a lower bound)" if base_open else ""))])
    return table(["server", f"capacity (p99 < {LATE_P99_MS:g} ms, 0 lost)", "CPU % per call", f"ratio vs {baseline}"],
                 body)


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


def startup_table(rows: list[dict[str, Any]]) -> str:
    base = next((r["median_ms"] for r in rows if r["what"] == "python -c pass"), None)
    return table(["command", "median ms", "min ms", "runs", "vs python -c pass"],
                 [[r["what"], r["median_ms"], r["min_ms"], r["runs"], _ratio(r["median_ms"], base)] for r in rows])
