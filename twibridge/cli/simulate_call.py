"""``twibridge simulate-call FILE.wav``: the CLI layer over :mod:`twibridge.simulate`.

Only typer and the stdlib at module level: ``twibridge --help`` must stay
fast, and the server stack is imported only when a call actually runs.

Exit codes: 0 the call completed without protocol errors; 1 the server
misbehaved (protocol errors, refused, closed abnormally, timeout); 2 bad
usage or input (unreadable audio, bad ``--dtmf``, bad config).

``--speed N`` in-process runs the *whole* Trio loop (bridge included) on a
clock N× faster than real time, so the bridge's own pacing and timers stay
consistent with the caller's.  Against ``--server`` only the caller can be
sped up; a real-time bridge then falls behind, which shows as gaps.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from twibridge.cli.common import load_config_or_exit

DIGITS = "0123456789*#"


def parse_dtmf(spec: str) -> list[tuple[float, str]]:
    """``"1@2.5,#@4"`` → ``[(2.5, "1"), (4.0, "#")]``, sorted by time.

    Raises:
        ValueError: with a message naming the bad item.
    """
    out: list[tuple[float, str]] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        digit, sep, at = item.partition("@")
        digit = digit.strip()
        if not sep or len(digit) != 1 or digit not in DIGITS:
            raise ValueError(f"{item!r}: expected DIGIT@SECONDS with a digit among {DIGITS}, e.g. 1@2.5")
        try:
            t = float(at)
        except ValueError:
            raise ValueError(f"{item!r}: {at.strip()!r} is not a number of seconds") from None
        if not 0 <= t < 86400:
            raise ValueError(f"{item!r}: the time must be >= 0 seconds")
        out.append((t, digit))
    return sorted(out)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def simulate_call(
    file: Annotated[Path, typer.Argument(help="Caller recording: a WAV (PCM, float, μ-law or A-law; 8-48 kHz; "
                                         "mono or stereo).", show_default=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config for the in-process "
                                                   "bridge (default: built-in defaults, echo agent); with "
                                                   "--server, where the auth token comes from.")] = None,
    server: Annotated[Optional[str], typer.Option(help="Call a running `twibridge serve` at this base URL "
                                                  "(e.g. http://127.0.0.1:8080) instead of an in-process "
                                                  "bridge.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write what the caller heard: 8 kHz mono PCM16 WAV on "
                                                "the call's timeline.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the report as JSON.")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a picture of the call: one "
                                                 "self-contained HTML page (docs/records.md).")] = None,
    dtmf: Annotated[str, typer.Option(help='Digits at times (seconds), e.g. "1@2.5,#@4".')] = "",
    speed: Annotated[float, typer.Option(min=0.1, max=50.0, help="Run the clock N× faster.")] = 1.0,
    from_number: Annotated[str, typer.Option("--from", help="Caller number (From).")] = "+15005550006",
    to_number: Annotated[str, typer.Option("--to", help="Called number (To).")] = "+15005550001",
    tail: Annotated[float, typer.Option(min=0.0, max=600.0, help="Seconds of silence after the file, "
                                        "so the last reply can play.")] = 3.0,
    timeout: Annotated[Optional[float], typer.Option(min=0.1, help="Give up after this many seconds "
                                                     "(default: audio length / speed + 55 s).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")] = False,
) -> None:
    """Play a recorded caller into the bridge exactly as Twilio would; show and save what was heard."""
    try:
        digits = parse_dtmf(dtmf)
    except ValueError as exc:
        raise _fail(f"bad --dtmf: {exc}", 2) from None

    from twibridge.simulate.wavio import AudioFileError, load_caller_audio

    cfg, _ = load_config_or_exit(config, search_defaults=False)
    try:
        audio = load_caller_audio(file)
    except AudioFileError as exc:
        raise _fail(f"cannot read {file}: {exc.reason}", 2) from None
    for target in (out, report, html):
        if target is not None and not target.parent.is_dir():
            raise _fail(f"cannot write {target}: no such directory {target.parent}", 2)
    call_s = audio.duration_ms / 1000 + tail
    late = [f"{d}@{t:g}" for t, d in digits if t > call_s]
    if late:
        raise _fail(f"bad --dtmf: {', '.join(late)} after the call ends ({call_s:.2f} s)", 2)

    code = _run(cfg, config is not None, audio.ulaw, server=server, out=out, report_path=report, html_path=html,
                digits=digits,
                speed=speed, from_number=from_number, to_number=to_number, tail=tail, timeout=timeout, quiet=quiet)
    raise typer.Exit(code)


def _run(cfg: Any, explicit_config: bool, ulaw: bytes, *, server: str | None, out: Path | None,
         report_path: Path | None, digits: list[tuple[float, str]], speed: float, from_number: str,
         html_path: Path | None = None,
         to_number: str, tail: float, timeout: float | None, quiet: bool) -> int:
    import trio
    import trio.testing
    from rich.console import Console

    from twibridge import logs
    from twibridge.config import with_overrides
    from twibridge.simulate.caller import CallOptions, CallResult, simulate_call
    from twibridge.simulate.report import CallProgress, build_report, render_report
    from twibridge.simulate.wavio import write_pcm16_wav
    from twibridge.audio.g711 import ulaw_to_pcm16

    in_process = server is None
    token = cfg.twilio.auth_token.get_secret_value()
    if in_process and not token:
        # Exercise signatures even without a configured token: a random one for this run.
        token = secrets.token_hex(16)
        cfg = with_overrides(cfg, twilio={"auth_token": token})
    if not explicit_config:
        cfg = with_overrides(cfg, log={"level": "error" if quiet else "warning", "format": "console"})
    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    console = Console(stderr=False)
    if not in_process and not token:
        typer.echo("warning: no twilio.auth_token (--config or TWIBRIDGE_TWILIO_AUTH_TOKEN): requests are "
                   "signed with an empty token and a validating server will refuse them", err=True)

    public = cfg.server.public_url.rstrip("/")
    opts = CallOptions(
        from_number=from_number, to_number=to_number, dtmf=digits, tail_s=tail,
        # In-process, the whole loop runs on a fast clock instead (see the module docstring).
        speed=1.0 if in_process else speed,
        timeout_s=None if timeout is None else timeout * (speed if in_process else 1.0),
        webhook_url=public + "/voice" if public else None,
        # The server refuses streams naming another account than its [twilio] account_sid.
        **({"account_sid": cfg.twilio.account_sid} if cfg.twilio.account_sid else {}),
    )
    total_ms = len(ulaw) / 8 + tail * 1000

    async def main() -> tuple[CallResult, dict[str, Any] | None]:
        with CallProgress(console, total_ms, enabled=not quiet) as progress:
            if in_process:
                from twibridge.server.app import make_runtime, running_server

                rt = make_runtime(cfg)
                async with running_server(cfg, rt=rt) as base_url:
                    res = await simulate_call(base_url, token, ulaw, opts, on_progress=progress)
                    return res, await _summary_of(rt, res.call_sid)
            assert server is not None
            return await simulate_call(server, token, ulaw, opts, on_progress=progress), None

    clock = trio.testing.MockClock(rate=speed) if in_process and speed != 1.0 else None
    try:
        result, summary = trio.run(main, clock=clock)
    except OSError as exc:
        typer.echo(f"cannot start the in-process bridge: {exc}", err=True)
        return 1
    # What only the bridge knows (its call summary): None from a remote bridge (--server).
    rep = build_report(result, None if summary is None else list(summary.get("tools") or []),
                       None if summary is None else list(summary.get("agent_providers") or []))
    try:
        if out is not None:
            write_pcm16_wav(out, ulaw_to_pcm16(result.heard_ulaw))
        if report_path is not None:
            report_path.write_text(json.dumps(rep, indent=1) + "\n")
        if html_path is not None:
            from twibridge.simulate.picture import picture

            html_path.write_text(picture(result, rep), encoding="utf-8")
    except (OSError, RuntimeError) as exc:  # soundfile raises LibsndfileError (a RuntimeError)
        typer.echo(f"cannot write the output: {exc}", err=True)
        return 2
    if not quiet:
        render_report(console, rep, result)
    elif not result.ok:
        typer.echo(f"{result.outcome.value}: {result.detail}", err=True)
        for err in result.protocol_errors:
            typer.echo(f"protocol error: {err}", err=True)
    return 0 if result.ok else 1


async def _summary_of(rt: Any, call_sid: str) -> dict[str, Any]:
    """The in-process bridge's own summary of the call (its tool calls, the providers that served it)."""
    import trio

    with trio.move_on_after(5):
        while call_sid in rt.calls:
            await rt.calls_changed.wait()
    for summary in await rt.registry.recent():
        if summary.get("call_sid") == call_sid:
            return dict(summary)
    return {}
