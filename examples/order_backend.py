#!/usr/bin/env python3
"""A tiny business backend for twibridge tools: answers ``lookup_order``.

Standard library only, so you can copy it anywhere.  twibridge POSTs each
tool call as JSON, signed per Standard Webhooks (https://www.standardwebhooks.com):

    webhook-id: msg_...            webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>

where ``key`` is the base64-decoded part of the ``whsec_...`` secret (the
same value as ``[tools] secret``).  The body is
``{"name", "arguments", "tool_call_id", "call": {"call_sid", "stream_sid", "from", "to", "params"}}``;
a 2xx JSON answer is what the model hears.

Run:  TWIBRIDGE_TOOLS_SECRET=whsec_... python examples/order_backend.py --port 8765
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORDERS = {
    "42": {"status": "shipped", "carrier": "UPS", "eta": "Thursday"},
    "1001": {"status": "processing", "eta": "next week"},
}
TOLERANCE_S = 5 * 60  # the spec's replay window
MAX_BODY = 64 * 1024


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """True when the request carries a valid, fresh Standard Webhooks signature."""
    msg_id, stamp, signatures = (headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp.isdigit() and signatures):
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return any(hmac.compare_digest(sig.encode(), b"v1," + expected) for sig in signatures.split())


def lookup_order(arguments: dict[str, object]) -> dict[str, object]:
    number = str(arguments.get("order_number", "")).strip()
    order = ORDERS.get(number)
    if order is None:
        return {"found": False, "order_number": number, "hint": "ask the caller to check the number"}
    return {"found": True, "order_number": number, **order}


class Handler(BaseHTTPRequestHandler):
    secret = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.answer(413, {"error": "too large"})
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if not verify(self.secret, headers, body):  # check the raw bytes, before parsing
            return self.answer(401, {"error": "bad signature"})
        request = json.loads(body)
        if self.path.rstrip("/") != "/lookup_order" or request.get("name") != "lookup_order":
            return self.answer(404, {"error": "no such function"})
        self.answer(200, lookup_order(request.get("arguments") or {}))

    def answer(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("order_backend: " + (fmt % args) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="A lookup_order backend for twibridge tools.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    args = parser.parse_args()
    Handler.secret = os.environ.get("TWIBRIDGE_TOOLS_SECRET", "")
    if not Handler.secret.startswith("whsec_"):
        sys.exit("set TWIBRIDGE_TOOLS_SECRET to the same whsec_... secret as [tools] secret")
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"order backend listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
