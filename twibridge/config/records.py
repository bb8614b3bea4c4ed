"""``[recording]``, ``[redact]`` and ``[webhooks]``: what a call leaves behind.

Three tables, one capability (``twibridge/records/``): the stereo recording
of what was heard, the redaction every transcript passes before it leaves
memory, and the signed post-call report with its spool.  Everything that
could fail at call time is checked here instead: a bad regex, an unknown
built-in pattern, a malformed Standard Webhooks secret, a URL that is not
``http(s)://``, pause digits that are not DTMF keys.
"""

from __future__ import annotations

import base64
import binascii
import re

from pydantic import Field, SecretStr, field_validator, model_validator

from twibridge.config.sections import _Section

#: The built-in redaction patterns (``twibridge.records.redact`` holds them).
BUILTIN_PATTERNS = ("card", "ssn", "email")
DTMF_KEYS = set("0123456789*#")


class RecordingConfig(_Section):
    enabled: bool = False
    dir: str = "/var/lib/twibridge/recordings"
    keep_days: int = Field(30, ge=0, le=36500)  # 0: never delete
    announce: str = Field("", max_length=1000)
    #: DTMF keys pressed in a row (within 2 s) that pause / resume the recording; "" turns it off.
    pause_digits: str = Field("*9", max_length=8)

    @field_validator("pause_digits")
    @classmethod
    def _digits(cls, value: str) -> str:
        if set(value) - DTMF_KEYS:
            raise ValueError(f"recording.pause_digits: DTMF keys only (0-9, * and #), got {value!r}")
        return value


class RedactConfig(_Section):
    patterns: list[str] = Field(default_factory=lambda: ["card", "ssn"])
    extra: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in BUILTIN_PATTERNS]
        if unknown:
            raise ValueError(f"redact.patterns: unknown pattern {unknown[0]!r} (built-in: "
                             f"{', '.join(BUILTIN_PATTERNS)})")
        return value

    @field_validator("extra")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for i, rx in enumerate(value):
            try:
                compiled = re.compile(rx)
            except re.error as exc:
                raise ValueError(f"redact.extra[{i}]: not a valid regular expression: {exc}") from None
            if compiled.match(""):
                raise ValueError(f"redact.extra[{i}]: matches the empty string (it would redact nothing useful)")
        return value


class WebhooksConfig(_Section):
    call_ended: str = ""
    secret: SecretStr = SecretStr("")
    timeout_s: float = Field(5.0, gt=0, le=60)
    spool_dir: str = "/var/lib/twibridge/spool"

    @model_validator(mode="after")
    def _check(self) -> WebhooksConfig:
        url = self.call_ended
        if url and not (url.startswith("https://") or url.startswith("http://")):
            raise ValueError("webhooks.call_ended: expected an http(s):// URL")
        if url:
            problem = _secret_problem(self.secret.get_secret_value())
            if problem is not None:
                raise ValueError(f"webhooks.secret: {problem} (required when webhooks.call_ended is set)")
        return self


def _secret_problem(secret: str) -> str | None:
    """The form ``twibridge.webhooks.signing.secret_problem`` checks (config sits below the
    webhooks wing, so it cannot import it; tests/records/test_config_records.py keeps the two in step)."""
    if not secret.startswith("whsec_"):
        return "expected a Standard Webhooks secret, 'whsec_' followed by base64"
    try:
        key = base64.b64decode(secret[6:] + "==", validate=False)
    except (binascii.Error, ValueError):
        return "the part after 'whsec_' is not base64"
    if not 24 <= len(key) <= 64:
        return f"the key must be 24-64 bytes (got {len(key)})"
    return None
