"""bench.soak's verdict: growth is the trend over time with the live-call count factored out."""

from __future__ import annotations

import math

from bench import soak


def series(per_call: float, leak_per_s: float, n: int = 120) -> list[dict[str, float]]:
    # Calls churn between 60 and 140 (as batches end and start); the value follows them.
    out = []
    for i in range(n):
        t = 5.0 * i
        calls = 100 + 40 * math.sin(i / 3)
        out.append({"t_s": t, "calls": round(calls), "pending": 0,
                    "rss_kb": 60_000 + per_call * round(calls) + leak_per_s * t})
    return out


def test_churn_alone_is_flat() -> None:
    g = soak.growth(series(per_call=120, leak_per_s=0), "rss_kb", warmup_s=60, until_s=600)
    assert g["growth_pct"] is not None and abs(g["growth_pct"]) < 0.1
    assert g["per_call"] == 120


def test_a_leak_is_measured_over_the_steady_window() -> None:
    # 10 kB/s over the 535 s of samples between warm-up and wind-down, on a mean of ~75 MB: ~7 %.
    g = soak.growth(series(per_call=120, leak_per_s=10), "rss_kb", warmup_s=60, until_s=600)
    assert g["growth_pct"] is not None and 6.5 < g["growth_pct"] < 7.5
    assert g["span_s"] == 535


def test_too_few_samples_give_no_verdict() -> None:
    assert soak.growth(series(0, 0, n=3), "rss_kb", warmup_s=0, until_s=10)["growth_pct"] is None


def test_cpu_is_the_slope_of_process_time_over_the_steady_window() -> None:
    # 0.3 s of CPU per 1 s of wall after warm-up (30 %); the warm-up's 90 % is left out.
    samples = [{"t_s": float(t), "cpu_s": (0.9 * t if t <= 60 else 54 + 0.3 * (t - 60))} for t in range(0, 600, 5)]
    assert soak.cpu_pct(samples, warmup_s=60, until_s=600) == 30.0
    assert soak.cpu_pct([{"t_s": 0.0}], warmup_s=0, until_s=10) is None


def _driver(cpu: float) -> dict[str, object]:
    return {"connected": 10, "failed": {}, "silent_calls": 0, "lateness_ms": {"p99": 2.0},
            "late_chunks_over_20ms": 0, "driver_send_late_ms": {"p99": 3.0}, "driver_cpu_pct": cpu}


def test_a_driver_error_fails_the_verdict_and_shows_in_the_table() -> None:
    plan = soak.SoakPlan(minutes=10, lanes=2)
    samples = [{"t_s": 5.0 * i, "calls": 10, "rss_kb": 1000, "fds": 20, "tasks": 50, "cpu_s": 0.1 * i}
               for i in range(120)]
    runs = [{"kind": "echo", "calls": 10, "driver": _driver(4.0), "lost": 0},
            {"kind": "echo", "calls": 10, "driver": _driver(6.0), "lost": 0}]
    clean = soak.summarize({"samples": {"echo": samples}, "runs": runs}, plan)["echo"]
    assert clean["passes"] and clean["driver_errors"] == 0
    assert clean["cpu_pct"] == 2.0 and clean["driver_cpu_pct"] == 10.0  # 0.1 s per 5 s; mean 5 % × 2 lanes

    runs.append({"kind": "echo", "calls": 10, "error": "TooSlowError()"})
    e = soak.summarize({"samples": {"echo": samples}, "runs": runs}, plan)
    assert not e["echo"]["passes"] and e["echo"]["driver_errors"] == 1 and e["echo"]["batches"] == 2
    assert "| 2.0 / 10.0 | 0 + 1 driver errors |" in soak.table(e)


def test_the_warm_up_lasts_until_the_call_history_is_full() -> None:
    # RSS climbs while the registry's 200-summary history fills (one summary per call), then churns flat.
    plan = soak.SoakPlan(minutes=30, lanes=2)
    samples = []
    for i in range(360):
        t = 5.0 * i
        kept = min(200, i)
        samples.append({"t_s": t, "calls": 10, "rss_kb": 90_000 + 50 * kept, "fds": 20, "tasks": 50,
                        "cpu_s": 0.1 * i, "history": kept, "history_max": 200})
    runs = [{"kind": "echo", "calls": 10, "driver": _driver(4.0), "lost": 0}]
    e = soak.summarize({"samples": {"echo": samples}, "runs": runs}, plan)
    assert e["echo"]["history_full_s"] == 1000.0 and e["echo"]["steady_from_s"] == 1000.0
    assert e["echo"]["rss_kb"]["growth_pct"] == 0.0 and e["echo"]["passes"]
    assert "| 16.7 min |" in soak.table(e)
    # Judged from the fixed warm-up (5 min) the same climb is growth, and the verdict fails.
    assert soak.growth(samples, "rss_kb", plan.warmup, plan.steady_until)["growth_pct"] > 5


def test_a_history_that_never_fills_keeps_the_fixed_warm_up_and_says_so() -> None:
    plan = soak.SoakPlan(minutes=10, lanes=2)
    samples = [{"t_s": 5.0 * i, "calls": 10, "rss_kb": 1000 + 10 * i, "fds": 20, "tasks": 50, "cpu_s": 0.1 * i,
                "history": i, "history_max": 200} for i in range(120)]
    runs = [{"kind": "echo", "calls": 10, "driver": _driver(4.0), "lost": 0}]
    e = soak.summarize({"samples": {"echo": samples}, "runs": runs}, plan)
    assert e["echo"]["steady_from_s"] == plan.warmup and e["echo"]["history_full_s"] is None
    assert not e["echo"]["passes"] and "(history not full)" in soak.table(e)
