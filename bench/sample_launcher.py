"""Start Twilio's Python sample for ``python -m bench`` (``BENCH_SAMPLE_CMD``), pointed at the bench's fake.

Run it with the *sample's own* venv, never twibridge's (its pinned FastAPI,
uvicorn and websockets are the thing being measured)::

    BENCH_SAMPLE_CMD="/opt/sample/.venv/bin/python bench/sample_launcher.py /opt/sample"

This file is ours and imports nothing of twibridge; it neither fetches nor
installs nor changes the sample.  It does the two things the contract in
``bench/sample_leg.py`` asks of the command, at run time:

* the sample hard-codes ``wss://api.openai.com/v1/realtime``: ``websockets.connect``
  is wrapped before the sample's ``main`` is imported, so the URL it builds
  goes to ``$BENCH_FAKE_URL`` instead (its query string kept, so the fake
  sees the model it asked for).  Nothing leaves loopback;
* it listens on a socket bound here to 127.0.0.1 port 0 (the sample's own
  ``__main__`` would bind 0.0.0.0:5050), and prints the
  ``{"event": "server.listening", "url": ...}`` line the bench waits for.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit


def _redirect_openai(fake_url: str) -> None:
    import websockets

    real = websockets.connect

    def connect(uri: str, *args: Any, **kwargs: Any) -> Any:
        query = urlsplit(uri).query
        return real(fake_url + ("?" + query if query else ""), *args, **kwargs)

    websockets.connect = connect  # the sample calls websockets.connect(...), looked up at call time


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not os.path.isfile(os.path.join(argv[1], "main.py")):
        sys.exit("usage: sample_launcher.py DIR  (DIR: a checkout of speech-assistant-openai-realtime-api-python)")
    fake_url = os.environ.get("BENCH_FAKE_URL", "")
    if not fake_url.startswith(("ws://127.0.0.1", "ws://localhost")):
        sys.exit("BENCH_FAKE_URL must be the bench's loopback fake (ws://127.0.0.1:PORT/...); python -m bench sets it")
    _redirect_openai(fake_url)
    sys.path.insert(0, argv[1])
    import uvicorn

    import main as sample  # the sample's module: reads OPENAI_API_KEY (the bench sets the fake's key)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    print(json.dumps({"event": "server.listening", "url": f"http://127.0.0.1:{port}"}), file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(sample.app, log_level="warning"))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv)
