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
