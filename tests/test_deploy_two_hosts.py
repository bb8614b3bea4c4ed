"""docs/deploy.md §4 for real: nginx in front of two hosts, one Redis.

The two hosts are network namespaces on this machine, each joined to the root
namespace by a veth pair (``ip netns``, so the test needs root).  Host A is
``10.X.Y.2`` and host B ``10.X.Y.6``; the root namespace plays the load
balancer and Redis host (``10.X.Y.1`` and ``10.X.Y.5`` on its side of the pairs,
plus loopback).  Each host runs ``twibridge serve`` inside its namespace with
the redis backend.  nginx (Debian's binary) runs the exact
``/etc/nginx/conf.d/twibridge.conf`` of deploy.md §1 with the two-VM upstream
of §4, read from the doc. Only the listen ports, the certificate paths (a
self-signed certificate made here) and the two upstream addresses are
substituted.  The test client is Twilio: https webhooks and wss streams to
nginx on 127.0.0.1, signed over ``public_url``.

Shown, in order: a stream whose ``/voice`` one host answered is served by the
other; calls through nginx land on both hosts; the cluster-wide ``max_calls``
holds on both; SIGKILL on A leaves B's calls untouched, and A's live records
expire in Redis (then the cap frees); SIGTERM on B drains through nginx (busy
TwiML for new calls, live calls keep their audio, then close 1001).

The namespaces, links, nginx and Redis are removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env, run_calls_cli
from support import ACCOUNT_SID, TOKEN, Leg, frames, sid, silence, tone
from twibridge.agents.wsclient import connect_ws
from twibridge.twilio.signature import SignatureChecker

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
REDIS_SERVER = shutil.which("redis-server")
IP = shutil.which("ip")
OPENSSL = shutil.which("openssl")
PUBLIC = "https://voice.example.com"
PORT = 8080
RECORD_TTL_S = 5
BUSY, SERVED = ["Say", "Hangup"], ["Connect", "Hangup"]


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (ip netns, veth pairs)"
    for name, path in (("ip (iproute2)", IP), ("nginx", NGINX), ("redis-server", REDIS_SERVER),
                       ("openssl", OPENSSL)):
        if path is None:
            return f"{name} not installed (.ci/run installs nginx and redis-server)"
    return None


pytestmark = [pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""), pytest.mark.redis]


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


class Net:
    """Two namespaces (hosts A and B), each with a veth pair to the root namespace."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        base = 100 + os.getpid() % 100
        third = (os.getpid() // 100) % 250
        self.ns = {"a": f"tb{tag}a", "b": f"tb{tag}b"}
        self.host_if = {"a": f"tb{tag}ah", "b": f"tb{tag}bh"}
        self.peer_if = {"a": f"tb{tag}an", "b": f"tb{tag}bn"}
        self.root_addr = {"a": f"10.{base}.{third}.1", "b": f"10.{base}.{third}.5"}
        self.addr = {"a": f"10.{base}.{third}.2", "b": f"10.{base}.{third}.6"}

    def up(self) -> None:
        assert IP is not None
        for h in ("a", "b"):
            ns, hif, pif = self.ns[h], self.host_if[h], self.peer_if[h]
            run(IP, "netns", "add", ns)
            run(IP, "link", "add", hif, "type", "veth", "peer", "name", pif)
            run(IP, "link", "set", pif, "netns", ns)
            run(IP, "addr", "add", f"{self.root_addr[h]}/30", "dev", hif)
            run(IP, "link", "set", hif, "up")
            run(IP, "-n", ns, "addr", "add", f"{self.addr[h]}/30", "dev", pif)
            run(IP, "-n", ns, "link", "set", pif, "up")
            run(IP, "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        assert IP is not None
        for h in ("a", "b"):
            subprocess.run([IP, "netns", "del", self.ns[h]], capture_output=True, timeout=20)
            subprocess.run([IP, "link", "del", self.host_if[h]], capture_output=True, timeout=20)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {host}:{port}") from None
            time.sleep(0.05)


def doc_nginx_config(http_port: int, https_port: int, cert: Path, key: Path, a: str, b: str) -> str:
    """deploy.md's conf.d file (§1) with the two-VM upstream (§4): the listen ports, certificate
    paths and upstream addresses substituted, each exactly once, or the test fails."""
    blocks = re.findall(r"```nginx\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    conf, upstream = blocks[0], blocks[1]
    conf, n = re.subn(r"upstream twibridge \{.*?\n\}\n", lambda _: upstream, conf, flags=re.S)
    assert n == 1, "deploy.md §1 has no single `upstream twibridge { ... }` block"
    for old, new in (("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                     ("/etc/letsencrypt/live/voice.example.com/fullchain.pem", str(cert)),
                     ("/etc/letsencrypt/live/voice.example.com/privkey.pem", str(key)),
                     ("10.0.0.11:8080", f"{a}:{PORT}"), ("10.0.0.12:8080", f"{b}:{PORT}")):
        assert conf.count(old) == 1, f"deploy.md's nginx config no longer has exactly one {old!r}"
        conf = conf.replace(old, new)
    return conf


def doc_redis_config(bind: str, password: str) -> str:
    """deploy.md §3's redis.conf lines (bind, protected mode, the twibridge ACL user), with this
    test's addresses and password; no append-only file (a scratch directory)."""
    block = re.findall(r"```conf\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)[0]
    for old, new in (("bind 10.0.0.5 127.0.0.1", f"bind {bind}"), ("appendonly yes", "appendonly no")):
        assert block.count(old) == 1, f"deploy.md's redis.conf no longer has exactly one {old!r}"
        block = block.replace(old, new)
    assert block.count("LONG-RANDOM-PASSWORD") == 1 and "protected-mode yes" in block
    return block.replace("LONG-RANDOM-PASSWORD", password)


@contextlib.contextmanager
def infrastructure() -> Iterator[dict[str, Any]]:
    """Namespaces, Redis (root namespace, on the veth addresses and loopback), nginx on loopback."""
    assert NGINX is not None and REDIS_SERVER is not None and OPENSSL is not None
    net = Net()
    work = Path(tempfile.mkdtemp(prefix="twibridge-2hosts-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        net.up()
        redis_port = free_port()
        password = secrets.token_hex(16)
        (work / "redis.conf").write_text(
            doc_redis_config(f"{net.root_addr['a']} {net.root_addr['b']} 127.0.0.1", password)
            + f'port {redis_port}\ndir {work}\nsave ""\nrequirepass {secrets.token_hex(16)}\nloglevel warning\n')
        rds = subprocess.Popen([REDIS_SERVER, str(work / "redis.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(rds)
        wait_port("127.0.0.1", redis_port, rds, "redis-server")

        cert, key = work / "voice.crt", work / "voice.key"
        run(OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=voice.example.com",
            "-addext", "subjectAltName=DNS:voice.example.com,IP:127.0.0.1")
        http_port, https_port = free_port(), free_port()
        (work / "twibridge.conf").write_text(
            doc_nginx_config(http_port, https_port, cert, key, net.addr["a"], net.addr["b"]))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / d).mkdir()
        (work / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/twibridge.conf;
}}
""")
        test = subprocess.run([NGINX, "-t", "-p", str(work), "-c", str(work / "nginx.conf")],
                              capture_output=True, text=True, timeout=20)
        assert test.returncode == 0, test.stderr
        ngx = subprocess.Popen([NGINX, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ngx)
        wait_port("127.0.0.1", https_port, ngx, "nginx")
        yield {"net": net, "redis_port": redis_port, "redis_password": password, "https": f"https://127.0.0.1:{https_port}",
               "ca": cert, "work": work}
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        net.down()
        shutil.rmtree(work, ignore_errors=True)


class Twilio:
    """The Twilio side, through nginx: signed webhooks and streams, over TLS."""

    def __init__(self, base: str, ca: Path) -> None:
        self.base = base
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.signer = SignatureChecker(TOKEN)

    async def voice(self, call_sid: str, base: str | None = None) -> tuple[list[str], dict[str, str]]:
        """POST /voice (to nginx, or to ``base``): the TwiML verbs and the Stream's parameters."""
        form = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "From": "+15550001", "To": "+15550002"}
        headers = {"X-Twilio-Signature": self.signer.sign(PUBLIC + "/voice", form)}
        async with httpx.AsyncClient(verify=self.ssl, timeout=10) as client:
            resp = await client.post((base or self.base) + "/voice", data=form, headers=headers)
        assert resp.status_code == 200, resp.text
        twiml = ET.fromstring(resp.text)
        stream = twiml.find("./Connect/Stream")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")} if stream is not None \
            else {}
        return [child.tag for child in twiml], params

    @contextlib.asynccontextmanager
    async def stream(self, base: str | None = None) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        url = (base or self.base).replace("https://", "wss://").replace("http://", "ws://") + "/media-stream"
        headers = {"X-Twilio-Signature": self.signer.sign(PUBLIC.replace("https://", "wss://") + "/media-stream", {})}
        async with connect_ws(url, headers, ssl_context=self.ssl if url.startswith("wss") else None) as ws:
            yield ws


async def echo_round(leg: Leg, ms: int = 400) -> int:
    before = len(leg.audio)
    for f in frames(tone(ms, 440) + silence(700)):
        await leg.media(f)
    await leg.collect(until_ms_of_audio=(before // 8) + ms - 150, idle_s=3)
    return len(leg.audio) - before


def served_by(sp: ServerProcess, call_sid: str) -> bool:
    return any(line.get("event") == "call.started" and line.get("call_sid") == call_sid for line in sp.lines)


async def started_on_either(a: ServerProcess, b: ServerProcess, call_sid: str) -> None:
    """Until one host logs ``call.started`` for ``call_sid``."""
    async with trio.open_nursery() as nursery:
        async def wait(sp: ServerProcess) -> None:
            await sp.wait_for(lambda l: l.get("event") == "call.started" and l.get("call_sid") == call_sid)
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait, a)
        nursery.start_soon(wait, b)


async def live_calls(env: dict[str, str]) -> set[str]:
    rc, out, err = await run_calls_cli(env, "--json")
    assert rc == 0, err
    return {call["call_sid"] for call in json.loads(out)["live"]}


async def test_two_hosts_behind_the_docs_nginx_config() -> None:
    with infrastructure() as infra:
        net: Net = infra["net"]
        redis_cli_env = base_env(TWIBRIDGE_STATE_BACKEND="redis",
                                 TWIBRIDGE_STATE_REDIS_URL=f"redis://twibridge:{infra['redis_password']}@127.0.0.1:{infra['redis_port']}/0")

        def host_env(h: str) -> dict[str, str]:
            return base_env(TWIBRIDGE_STATE_BACKEND="redis",
                            TWIBRIDGE_STATE_REDIS_URL=f"redis://twibridge:{infra['redis_password']}@{net.root_addr[h]}:{infra['redis_port']}/0",
                            TWIBRIDGE_STATE_RECORD_TTL_S=str(RECORD_TTL_S), TWIBRIDGE_STATE_TIMEOUT_S="1",
                            TWIBRIDGE_SERVER_PUBLIC_URL=PUBLIC, TWIBRIDGE_SERVER_MAX_CALLS="4",
                            TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="3")

        hosts = {h: ServerProcess(host_env(h), ["ip", "netns", "exec", net.ns[h], sys.executable, "-m", "twibridge",
                                                "serve", "--host", net.addr[h], "--port", str(PORT)])
                 for h in ("a", "b")}
        twilio = Twilio(infra["https"], infra["ca"])
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                try:
                    a, b = [await hosts[h].start(nursery) for h in ("a", "b")]
                    async with contextlib.AsyncExitStack() as streams:
                        legs: dict[str, Leg] = {}

                        # 1. /voice answered by one host, the stream served by the other.
                        cross = sid("CA", 1)
                        verbs, params = await twilio.voice(cross)
                        assert verbs == SERVED and params["CallSid"] == cross
                        answered = "a" if any(l.get("event") == "voice.answered" and l.get("call_sid") == cross
                                              for l in a.lines) else "b"
                        other = {"a": "b", "b": "a"}[answered]
                        ws = await streams.enter_async_context(twilio.stream(hosts[other].url))
                        legs[cross] = leg = Leg(ws, 1)
                        await leg.start(params, token=False)  # the token A (or B) minted
                        await hosts[other].wait_for(lambda l: l.get("event") == "call.started"
                                                    and l.get("call_sid") == cross)
                        assert await echo_round(leg) > 0
                        assert not served_by(hosts[answered], cross)

                        # 2. Three more calls through nginx: they land on both hosts.
                        for n in (2, 3, 4):
                            verbs, params = await twilio.voice(sid("CA", n))
                            assert verbs == SERVED
                            ws = await streams.enter_async_context(twilio.stream())
                            legs[sid("CA", n)] = leg = Leg(ws, n)
                            await leg.start(params, token=False)
                        for n in (2, 3, 4):
                            await started_on_either(a, b, sid("CA", n))
                        on = {h: {c for c in legs if served_by(hosts[h], c)} for h in ("a", "b")}
                        via_nginx = {sid("CA", n) for n in (2, 3, 4)}
                        assert on["a"] & via_nginx and on["b"] & via_nginx, on
                        assert on["a"] | on["b"] == set(legs) and not on["a"] & on["b"]

                        # 3. max_calls = 4 is cluster-wide: every new call is busy, whichever host answers.
                        # (nginx's least_conn sends webhooks to the host with fewer tunnelled calls,
                        # so each host is also asked directly, as another balancer might.)
                        for n, base in ((5, None), (6, None), (7, a.url), (8, b.url)):
                            assert (await twilio.voice(sid("CA", n), base))[0] == BUSY
                        assert a.events("voice.refused") and b.events("voice.refused")
                        assert await live_calls(redis_cli_env) == set(legs)

                        # 4. SIGKILL on A: B's calls are untouched; A's records expire, freeing the cap.
                        a.signal(signal.SIGKILL)
                        assert await a.proc.wait() == -signal.SIGKILL  # type: ignore[union-attr]
                        for call in on["b"]:
                            assert await echo_round(legs[call]) > 0
                        killed = time.monotonic()
                        while await live_calls(redis_cli_env) != on["b"]:
                            assert time.monotonic() - killed < RECORD_TTL_S + 10, "A's records never expired"
                            await trio.sleep(0.25)  # Redis expiry: nothing to wait on but the clock
                        assert (await twilio.voice(sid("CA", 9)))[0] == SERVED  # nginx skips dead A
                        for call in on["a"]:  # nginx closed A's tunnels when A died
                            with pytest.raises(trio_websocket.ConnectionClosed):
                                with trio.fail_after(10):
                                    while True:
                                        await legs[call].ws.get_message()

                        # 5. SIGTERM on B drains through nginx: busy TwiML, live calls keep working, then 1001.
                        await b.drain()
                        assert (await twilio.voice(sid("CA", 10)))[0] == BUSY
                        keep = sorted(on["b"])
                        assert await echo_round(legs[keep[0]]) > 0
                        codes = {}
                        for call in keep:
                            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                                with trio.fail_after(15):
                                    while True:
                                        await legs[call].ws.get_message()
                            codes[call] = closed.value.reason.code
                        assert codes == {call: 1001 for call in keep}
                        assert await b.proc.wait() == 0  # type: ignore[union-attr]
                        ended = {l["call_sid"]: l["outcome"] for l in b.events("call.ended")}
                        assert all(ended[call] == "shutdown" for call in keep)
                finally:
                    with trio.CancelScope(shield=True):
                        for sp in hosts.values():
                            if sp.proc is not None:
                                await sp.stop(timeout=5)
