"""Every endpoint × every way a signature can be wrong → 403, directly exposed and behind a proxy.

Twilio signs the exact URL it requested: for a proxy that is
``[server] public_url`` + path (``wss://`` for the upgrade), never the
``http://127.0.0.1:port`` the app sees.  A signature made for any other URL
(another endpoint, the internal address, another scheme, host, port or query)
or over other parameters must not pass, and a refused upgrade must never
reach an agent provider.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import httpx
import pytest
import trio_websocket

from faulty_agents import ModalProvider
from support import TOKEN, bridge, make_config, media_socket, sid
from twibridge.server.app import make_runtime
from twibridge.server.guard import LogBudget
from twibridge.twilio.signature import SignatureChecker

FORM = {"CallSid": sid("CA", 1), "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001",
        "CallStatus": "ringing", "StreamSid": sid("MZ", 1), "StreamEvent": "stream-started"}
OTHER_TOKEN = "another-auth-token-fedcba9876543210"

SETUPS = {
    "direct": "",
    "proxy": "https://bridge.example.com",
    "proxy-prefix": "https://bridge.example.com/twibridge",
}


def public(base_url: str, internal: str, path: str, *, ws: bool = False) -> str:
    """The URL Twilio requests (and signs) for ``path``."""
    url = (base_url or internal) + path
    if ws:
        url = "wss://" + url.removeprefix("https://") if url.startswith("https://") else \
            "ws://" + url.removeprefix("http://")
    return url


def replays(signed: str, internal: str, path: str, ws: bool) -> dict[str, str]:
    """URLs a signature may have been made for, other than the one Twilio used for ``path``."""
    other_path = "/stream-status" if path != "/stream-status" else "/voice"
    host_swapped = signed.replace("bridge.example.com", "evil.example.com") if "example.com" in signed else \
        signed.replace("127.0.0.1", "localhost")
    http_internal = internal + path
    out = {
        "other-endpoint": signed.replace(path, other_path),
        "other-host": host_swapped,
        "with-query": signed + "?a=1",
        "trailing-slash": signed + "/",
        "internal-url": "ws://" + http_internal.removeprefix("http://") if ws else http_internal,
    }
    if ws:
        out["http-scheme-not-ws"] = signed.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    else:
        out["other-scheme"] = signed.replace("https://", "http://", 1) if signed.startswith("https://") else \
            signed.replace("http://", "https://", 1)
    if "example.com" in signed:
        out["with-port"] = signed.replace("bridge.example.com", "bridge.example.com:8443")
    return {k: v for k, v in out.items() if v != signed}


async def post(url: str, path: str, form: dict[str, str], headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.post(url + path, data=form, headers=headers)).status_code


async def upgrade(url: str, headers: dict[str, str]) -> int:
    try:
        async with media_socket(url, signature=headers.get("X-Twilio-Signature", "")):
            return 101
    except trio_websocket.ConnectionRejected as exc:
        return exc.status_code


@pytest.mark.parametrize("setup", sorted(SETUPS))
async def test_every_endpoint_refuses_every_bad_signature(setup: str, captured_logs) -> None:
    base = SETUPS[setup]
    cfg = make_config(server={"public_url": base})
    rt = make_runtime(cfg)
    provider = ModalProvider(cfg)
    rt.provider_factory = lambda c: provider
    results: dict[tuple[str, str], int] = {}
    async with bridge(cfg, rt) as (url, _):
        ok = SignatureChecker(TOKEN)
        for path in ("/voice", "/stream-status", "/media-stream"):
            ws = path == "/media-stream"
            signed = public(base, url, path, ws=ws)
            params = {} if ws else FORM
            send: Callable[[dict[str, str], dict[str, str]], Awaitable[int]]
            if ws:
                async def send(headers: dict[str, str], form: dict[str, str]) -> int:
                    return await upgrade(url, headers)
            else:
                async def send(headers: dict[str, str], form: dict[str, str], path: str = path) -> int:
                    return await post(url, path, form, headers)
            cases: dict[str, tuple[dict[str, str], dict[str, str]]] = {
                "none": ({}, FORM),
                "empty": ({"X-Twilio-Signature": ""}, FORM),
                "garbage": ({"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"}, FORM),
                "not-base64": ({"X-Twilio-Signature": "%%%"}, FORM),
                "other-token": ({"X-Twilio-Signature": SignatureChecker(OTHER_TOKEN).sign(signed, params)}, FORM),
            }
            for name, other_url in replays(signed, url, path, ws).items():
                cases[f"replay:{name}"] = ({"X-Twilio-Signature": ok.sign(other_url, params)}, FORM)
            if not ws:
                tampered = {**FORM, "From": "+19995550000"}
                cases["tampered-param"] = ({"X-Twilio-Signature": ok.sign(signed, FORM)}, tampered)
                cases["extra-param"] = ({"X-Twilio-Signature": ok.sign(signed, FORM)}, {**FORM, "Digits": "1"})
            for case, (headers, form) in cases.items():
                results[(path, case)] = await send(headers, form)
            if not ws:  # the request carries a query string the signature does not cover
                results[(path, "query-added")] = await post(url, path + "?x=1", FORM,
                                                           {"X-Twilio-Signature": ok.sign(signed, FORM)})
            # the control: what Twilio itself would send passes
            results[(path, "valid")] = await send({"X-Twilio-Signature": ok.sign(signed, params)}, FORM)
        scraped = rt.metrics.calls.labels(outcome="refused_unsigned")._value.get()  # type: ignore[union-attr]

    expected = {key: 403 for key in results}
    expected.update({("/voice", "valid"): 200, ("/stream-status", "valid"): 204, ("/media-stream", "valid"): 101})
    assert results == expected
    refusals = sum(1 for code in results.values() if code == 403)
    assert refusals >= 3 * 10
    assert scraped == refusals  # each refusal counted once
    logged = captured_logs.events("http.bad_signature") + captured_logs.events("ws.bad_signature")
    # Each refusal is counted; the first LogBudget().first are logged in full (issue #23, 10).
    assert len(logged) == min(refusals, LogBudget().first)
    assert TOKEN not in captured_logs.text and OTHER_TOKEN not in captured_logs.text
    # only the one valid upgrade ever reached the agent side
    assert sum(provider.connects.values()) <= 1


async def test_the_proxy_ignores_a_forged_host_header() -> None:
    """Behind a proxy the signed URL comes from public_url: a Host header the client
    chose (and signed for) changes nothing."""
    cfg = make_config(server={"public_url": "https://bridge.example.com"})
    async with bridge(cfg) as (url, _):
        forged = SignatureChecker(TOKEN).sign("https://evil.example.com/voice", FORM)
        headers = {"X-Twilio-Signature": forged, "Host": "evil.example.com"}
        assert await post(url, "/voice", FORM, headers) == 403
        genuine = SignatureChecker(TOKEN).sign("https://bridge.example.com/voice", FORM)
        assert await post(url, "/voice", FORM, {"X-Twilio-Signature": genuine, "Host": "evil.example.com"}) == 200
