"""TLS on the box: ``[server] tls_cert`` and ``tls_key`` checked before Hypercorn gets them.

Hypercorn serves TLS itself (``certfile``/``keyfile``: its own SSL context,
ALPN, HTTP/1.1 and WebSocket).  Without a check here, an unreadable key or a
certificate for another key would surface as a traceback from deep inside
Hypercorn at start.  :func:`problems` gives one line per problem, naming the
key: ``validate-config`` prints them (exit 2) and ``serve`` refuses to start.

The match check is OpenSSL's own, through :meth:`ssl.SSLContext.load_cert_chain`
(it refuses a key that is not the certificate's).  Encrypted keys are refused:
a service has nobody to type the passphrase (systemd's ``LoadCredential=``
keeps a plain key readable by the service alone).
"""

from __future__ import annotations

import ssl

from twibridge.config.sections import ServerConfig


def problems(server: ServerConfig) -> list[str]:
    """Why ``tls_cert``/``tls_key`` cannot serve (empty when TLS is off or fine)."""
    if not server.tls_cert:
        return []
    found: list[str] = []
    heads: dict[str, bytes] = {}
    for key, path in (("server.tls_cert", server.tls_cert), ("server.tls_key", server.tls_key)):
        try:
            with open(path, "rb") as handle:
                heads[key] = handle.read(1 << 16)
        except OSError as exc:
            found.append(f"{key}: cannot read {path}: {exc.strerror or exc}")
            continue
        if b"-----BEGIN " not in heads[key]:
            found.append(f"{key}: {path} is not a PEM file")
    if found:
        return found
    if b"ENCRYPTED" in heads["server.tls_key"]:
        return [f"server.tls_key: {server.tls_key} is encrypted; give the service an unencrypted key "
                "(readable by it alone, e.g. through LoadCredential=)"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=server.tls_cert)
    except ssl.SSLError as exc:
        return [f"server.tls_cert: {server.tls_cert} holds no usable certificate ({_reason(exc)})"]
    try:
        # A callable password: a key encrypted in a way we did not spot fails instead of prompting.
        context.load_cert_chain(server.tls_cert, server.tls_key, password=_no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in _reason(exc):
            return [f"server.tls_key: {server.tls_key} is not the key of the certificate in {server.tls_cert}"]
        return [f"server.tls_key: {server.tls_key} holds no usable private key ({_reason(exc)})"]
    return []


def _reason(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _no_password() -> bytes:
    return b""
