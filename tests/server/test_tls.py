"""``[server] tls_cert`` / ``tls_key``: Hypercorn's own TLS, checked before it starts.

The certificates are made by the test (``openssl req -x509``, a self-signed
certificate for 127.0.0.1 that the clients trust as their only CA).  A real
https webhook and a real wss stream go to the bridge on loopback; signatures
are still checked against ``public_url``; ``validate-config`` and ``serve``
name the key whose file is unreadable, not PEM, encrypted or not the
certificate's.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from support import ACCOUNT_SID, TOKEN, make_config, silence, tone, frames, correlation
from twibridge.agents.wsclient import connect_ws
from twibridge.server import tls
from twibridge.server.app import running_server
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw
from twibridge.twilio.signature import SignatureChecker

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "https://bridge.example.com"


def make_pair(directory: Path, name: str, *, passphrase: str | None = None) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    *(["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"])],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_pair(tmp_path_factory.mktemp("tls"), "bridge")


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_https_webhook_and_wss_stream_with_signatures_over_public_url(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    config = make_config(server={"tls_cert": str(cert), "tls_key": str(key), "public_url": PUBLIC})
    signer = SignatureChecker(TOKEN)
    call_sid = "CA" + "7" * 32
    form = {"CallSid": call_sid, "From": "+15550001", "To": "+15550002", "AccountSid": ACCOUNT_SID}
    with trio.fail_after(30):
        async with running_server(config) as url:
            assert url.startswith("https://127.0.0.1:")
            async with httpx.AsyncClient(verify=client_context(cert), timeout=10) as client:
                # Signed for the URL Twilio used (public_url), sent over TLS to the box.
                voice = await client.post(url + "/voice", data=form,
                                          headers={"X-Twilio-Signature": signer.sign(PUBLIC + "/voice", form)})
                # Signed for the address we connected to: not what Twilio signs, refused.
                wrong = await client.post(url + "/voice", data=form,
                                          headers={"X-Twilio-Signature": signer.sign(url + "/voice", form)})
                assert (await client.get(url + "/healthz")).json()["status"] == "ok"
            assert voice.status_code == 200 and wrong.status_code == 403
            stream = ET.fromstring(voice.text).find("./Connect/Stream")
            assert stream is not None and stream.get("url") == "wss://bridge.example.com/media-stream"
            params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}

            # Twilio's stream: wss to the box, the upgrade signed over the public wss URL.
            target = "wss://" + url.removeprefix("https://") + "/media-stream"
            headers = {"X-Twilio-Signature": signer.sign("wss://bridge.example.com/media-stream", {})}
            utterance = tone(600, 440)
            received = bytearray()
            async with connect_ws(target, headers, ssl_context=client_context(cert)) as ws:
                await ws.send_message(emu.build_connected())
                await ws.send_message(emu.build_start(1, "MZ" + "7" * 32, ACCOUNT_SID, call_sid, params))
                for i, frame in enumerate(frames(utterance + silence(700))):
                    await ws.send_message(emu.build_inbound_media(i + 2, "MZ" + "7" * 32, i + 1, i * 20, frame))
                seq = 1000
                while len(received) < len(utterance) - 800:
                    event = emu.parse_from_bridge(await ws.get_message(), "MZ" + "7" * 32)
                    if isinstance(event, tw.OutMedia):
                        received += event.payload
                    elif isinstance(event, tw.OutMark):
                        seq += 1
                        await ws.send_message(emu.build_mark_echo(seq, "MZ" + "7" * 32, event.name))
            # The same upgrade signed over the box's own address is refused before any call.
            bad = {"X-Twilio-Signature": signer.sign(target, {})}
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with connect_ws(target, bad, ssl_context=client_context(cert)):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 403
    assert correlation(utterance, bytes(received)) > 0.9


async def test_plain_http_to_the_tls_port_gets_no_answer(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    config = make_config(server={"tls_cert": str(cert), "tls_key": str(key)})
    with trio.fail_after(20):
        async with running_server(config) as url:
            async with httpx.AsyncClient(timeout=5) as client:
                with pytest.raises(httpx.HTTPError):
                    await client.get("http://" + url.removeprefix("https://") + "/healthz")


def check(cert: Path | str, key: Path | str) -> list[str]:
    return tls.problems(make_config(server={"tls_cert": str(cert), "tls_key": str(key)}).server)


def test_a_good_pair_passes_and_tls_off_checks_nothing(pair: tuple[Path, Path]) -> None:
    assert check(*pair) == []
    assert tls.problems(make_config().server) == []


def test_each_bad_file_is_named_by_its_key(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    other_cert, other_key = make_pair(tmp_path, "other")
    _, locked_key = make_pair(tmp_path, "locked", passphrase="hunter22")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    assert check(missing, key) == [f"server.tls_cert: cannot read {missing}: No such file or directory"]
    assert check(cert, junk) == [f"server.tls_key: {junk} is not a PEM file"]
    assert check(cert, other_key) == [f"server.tls_key: {other_key} is not the key of the certificate in {cert}"]
    assert check(other_cert, key) == [f"server.tls_key: {key} is not the key of the certificate in {other_cert}"]
    assert check(cert, locked_key) == [f"server.tls_key: {locked_key} is encrypted; give the service an "
                                       "unencrypted key (readable by it alone, e.g. through LoadCredential=)"]
    assert check(key, key) == [f"server.tls_cert: {key} holds no usable certificate (NO_CERTIFICATE_OR_CRL_FOUND)"]
    assert check(cert, cert)[0].startswith(f"server.tls_key: {cert} holds no usable private key")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}
    return subprocess.run([sys.executable, "-m", "twibridge", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **env}, cwd=ROOT)


def test_validate_config_and_serve_refuse_files_that_cannot_serve(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    _, other_key = make_pair(tmp_path, "other")
    good = tmp_path / "good.toml"
    good.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n[twilio]\nauth_token = "abcdefabcdef"\n')
    out = run_cli("validate-config", str(good), env={})
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "ok", "")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{other_key}"\n[twilio]\nauth_token = "abcdefabcdef"\n')
    line = f"{bad}: server.tls_key: {other_key} is not the key of the certificate in {cert}"
    out = run_cli("validate-config", str(bad), env={})
    assert (out.returncode, out.stdout, out.stderr.strip()) == (2, "", line)
    served = run_cli("serve", "--config", str(bad), "--port", "0", env={})
    assert served.returncode == 2 and "refusing to start: server.tls_key:" in served.stderr
    assert "Traceback" not in served.stderr
    half = run_cli("validate-config", env={"TWIBRIDGE_SERVER_TLS_CERT": str(cert), "TWIBRIDGE_TWILIO_AUTH_TOKEN": "x" * 12})
    assert half.returncode == 2 and "server.tls_key: set server.tls_cert and server.tls_key together" in half.stderr
