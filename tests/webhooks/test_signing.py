"""twibridge.webhooks.signing: Standard Webhooks headers, checked against the spec's own construction."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from twibridge.webhooks import signing

# The spec's example secret form: "whsec_" + base64 of the key.
KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def test_headers_are_the_hmac_of_id_timestamp_body() -> None:
    body = b'{"name":"lookup_order"}'
    h = signing.sign_headers(SECRET, body, "msg_abc", 1_700_000_000.9)
    assert h["webhook-id"] == "msg_abc"
    assert h["webhook-timestamp"] == "1700000000"
    want = base64.b64encode(hmac.new(KEY, b"msg_abc.1700000000." + body, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{want}"


def test_verify_accepts_its_own_and_refuses_a_changed_body() -> None:
    import time

    body = b'{"a":1}'
    h = signing.sign_headers(SECRET, body, signing.new_id(), time.time())
    signing.verify(SECRET, body, h)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, b'{"a":2}', h)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, body, {k: v for k, v in h.items() if k != "webhook-signature"})


def test_verify_refuses_an_old_timestamp() -> None:
    h = signing.sign_headers(SECRET, b"{}", "msg_1", 1_000_000_000)
    with pytest.raises(signing.BadSignature):
        signing.verify(SECRET, b"{}", h)


@pytest.mark.parametrize("bad", ["", "abc", "whsec_", "whsec_" + base64.b64encode(b"short").decode()])
def test_secret_problem_names_a_bad_secret(bad: str) -> None:
    assert signing.secret_problem(bad)
    with pytest.raises(ValueError):
        signing.sign_headers(bad, b"{}", "msg_1", 0)


def test_new_secret_and_ids_are_valid() -> None:
    assert signing.secret_problem(signing.new_secret()) is None
    ids = {signing.new_id() for _ in range(100)}
    assert len(ids) == 100 and not any("." in i for i in ids)
