"""``twibridge calls show CALL_SID [--json] [--html call.html]``: one call's report, transcript, recording.

Where it looks, in order (the first report found wins; a timeline is taken
from wherever there is one):

1. Redis (``[state] backend = "redis"``): the call's summary, with the report
   and the timeline, kept ``history_ttl_s``;
2. the delivery spool (``[webhooks] spool_dir``): pending, failed or delivered
   reports (with their delivery state);
3. the recordings (``[recording] dir``): ``<date>/<CallSid>.json`` beside the WAV.

Exit codes: 0 shown; 1 not found, or Redis unreachable; 2 bad config or
an unwritable ``--html`` path.  Only typer and the stdlib at module top.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit


def show_command(
    call_sid: str = typer.Argument(..., help="The call's CallSid (CA...)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    json_: bool = typer.Option(False, "--json", help="Print JSON: report, transcript, recording, delivery."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a picture of the call: one self-contained "
                                        "HTML page (waveforms, turns, barge-ins, latencies)."),
) -> None:
    """Show one call: its post-call report, transcript and recording path (and --html, a picture)."""
    cfg, _ = load_config_or_exit(config)
    if html is not None and not html.parent.is_dir():
        typer.echo(f"cannot write {html}: no such directory {html.parent}", err=True)
        raise typer.Exit(2)
    try:
        found = find(cfg, call_sid)
    except _Unreachable as exc:
        typer.echo(f"cannot reach Redis ([state] redis_url) within {cfg.state.timeout_s:g}s: {exc}", err=True)
        raise typer.Exit(1) from None
    if found["report"] is None:
        typer.echo(f"no report for {call_sid} (looked in: {', '.join(found['looked'])})", err=True)
        raise typer.Exit(1)
    report = found["report"]
    if html is not None:
        from twibridge.records.html import from_report, render

        page = render(from_report(report, found["timeline"], _channels(report.get("recording"))))
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as exc:
            typer.echo(f"cannot write {html}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
    if json_:
        typer.echo(json.dumps({"report": report, "transcript": report.get("transcript", []),
                               "recording": report.get("recording"), "delivery": found["delivery"],
                               "source": found["source"]}, indent=2, ensure_ascii=False))
    else:
        _print(report, found)


class _Unreachable(Exception):
    pass


def find(cfg: Any, call_sid: str) -> dict[str, Any]:
    """The report, its timeline, its delivery state and where they came from."""
    out: dict[str, Any] = {"report": None, "timeline": [], "delivery": None, "source": None, "looked": []}
    if cfg.state.backend == "redis":
        out["looked"].append("redis")
        summary = _from_redis(cfg, call_sid)
        if summary is not None and isinstance(summary.get("report"), dict):
            out.update(report=summary["report"], timeline=summary.get("timeline") or [], source="redis")
    from twibridge.records.spool import Spool

    out["looked"].append(f"spool {cfg.webhooks.spool_dir}")
    try:
        entries = Spool(cfg.webhooks.spool_dir).find(call_sid)
    except OSError:
        entries = []
    if entries:
        state, entry = entries[-1]
        out["delivery"] = {"state": state, "webhook_id": entry.msg_id, "attempts": entry.attempts,
                           "last_error": entry.last_error}
        if out["report"] is None:
            try:
                out.update(report=json.loads(entry.body), source="spool")
            except ValueError:
                pass
    out["looked"].append(f"recordings {cfg.recording.dir}")
    safe = "".join(c for c in call_sid if c.isalnum())
    for path in sorted(Path(cfg.recording.dir).glob(f"*/{safe}.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if out["report"] is None:
            out.update(report=data.get("report"), source=str(path))
        if not out["timeline"]:
            out["timeline"] = data.get("timeline") or []
    return out


def _from_redis(cfg: Any, call_sid: str) -> dict[str, Any] | None:
    import redis

    from twibridge.state.redis_registry import summary_key

    try:
        client = redis.Redis.from_url(cfg.state.redis_url.get_secret_value(), decode_responses=True,
                                      socket_timeout=cfg.state.timeout_s,
                                      socket_connect_timeout=cfg.state.timeout_s)
    except ValueError:
        typer.echo("state.redis_url: not a valid redis:// / rediss:// / unix:// URL", err=True)
        raise typer.Exit(2) from None
    try:
        raw = client.get(summary_key(call_sid))
    except (redis.RedisError, OSError):
        raise _Unreachable("no answer (is redis-server running and reachable?)") from None
    finally:
        client.close()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _channels(path: Any) -> Any:
    """(left, right) samples of the recording, or None when there is none (or it cannot be read)."""
    if not path:
        return None
    import wave

    import numpy as np

    try:
        with wave.open(str(path)) as w:
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, wave.Error, EOFError):
        return None
    return data[0::2].astype(float), data[1::2].astype(float)


def _print(report: dict[str, Any], found: dict[str, Any]) -> None:
    rl = report.get("reply_latency_ms") or {}
    lines = [
        f"call        {report.get('call_sid', '')}  {report.get('from', '')} -> {report.get('to', '')}",
        f"when        {report.get('started_at', '')} .. {report.get('ended_at', '')}  ({report.get('duration_s')} s)",
        f"ended       {report.get('ended_reason', '')}  ({report.get('reason', '')})",
        f"agent       {report.get('agent', '')} / {report.get('provider', '')}",
        f"turns       {report.get('turns')}   barge-ins {report.get('barge_ins')}   "
        f"reply latency p50 {rl.get('p50')} ms p95 {rl.get('p95')} ms",
        f"recording   {report.get('recording') or 'none'}",
    ]
    if report.get("transfer_to"):
        lines.append(f"transferred {report['transfer_to']}")
    d = found.get("delivery")
    if d:
        lines.append(f"delivery    {d['state']} after {d['attempts']} attempt(s), webhook-id {d['webhook_id']}"
                     + (f", last error: {d['last_error']}" if d.get("last_error") else ""))
    for tool in report.get("tools") or []:
        lines.append(f"tool        {tool.get('name')}: {tool.get('outcome')} in {tool.get('duration_ms')} ms")
    lines.append("transcript")
    for t in report.get("transcript") or []:
        s = float(t.get("t_ms") or 0) / 1000
        lines.append(f"  [{int(s // 60)}:{s % 60:04.1f}] {t.get('role', '')}: {t.get('text', '')}")
    sys.stdout.write("\n".join(lines) + "\n")
