"""``[tools]``: the functions an agent may ask the bridge to run (issue #17).

Every request is a signed ``POST`` to the function's ``url`` (Standard
Webhooks, ``secret``).  What can be checked without I/O or other wings is
checked here, naming the dotted key: names (``^[A-Za-z0-9_-]{1,64}$``,
unique, not a built-in's), ``http(s)`` URLs, a schema that is a JSON-Schema
*object*, and a secret whenever a function is configured.  The rest (the
secret's form, the schema against the JSON-Schema meta-schema, a readable
``thinking_sound``) needs the ``webhooks`` / ``audio`` wings and is
:func:`twibridge.tools.checks.problems`' job; ``validate-config`` and
``serve`` run both.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from twibridge.config.sections import _Section

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The bridge's own functions (hang up, transfer; DTMF and the recording's pause and resume,
#: twibridge/call/builtins.py): a configured one may not shadow them.
RESERVED_NAMES = frozenset({"end_call", "transfer_to_human", "send_dtmf", "pause_recording", "resume_recording"})


def _empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class ToolFunctionConfig(_Section):
    """One ``[[tools.functions]]`` entry."""

    name: str
    description: str = ""
    url: str
    parameters: dict[str, Any] = Field(default_factory=_empty_object_schema)
    #: Per-function deadline; ``[tools] timeout_s`` when unset.
    timeout_s: float | None = Field(None, gt=0, le=300)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"expected 1-64 letters, digits, '_' or '-', got {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is a built-in function (reserved)")
        return name

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+", url):
            raise ValueError(f"expected an http(s):// URL, got {url!r}")
        return url

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError("must be a JSON-Schema object (type = \"object\")")
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError("'properties' must be a table")
        required = schema.get("required", [])
        if not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
            raise ValueError("'required' must be a list of property names")
        return schema


class ToolsConfig(_Section):
    #: Standard Webhooks secret, ``whsec_`` + base64 (env ``TWIBRIDGE_TOOLS_SECRET``).
    secret: SecretStr = SecretStr("")
    timeout_s: float = Field(5.0, gt=0, le=300)
    max_in_flight: int = Field(4, ge=1, le=64)
    #: A WAV looped to the caller while a tool runs ("" = none).
    thinking_sound: str = ""
    thinking_after_ms: int = Field(800, ge=0, le=60_000)
    functions: list[ToolFunctionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ToolsConfig:
        seen: set[str] = set()
        for i, fn in enumerate(self.functions):
            if fn.name in seen:
                raise ValueError(f"tools.functions.{i}.name: duplicate function name {fn.name!r}")
            seen.add(fn.name)
        if self.functions and not self.secret.get_secret_value():
            raise ValueError("tools.secret: required when functions are configured (env TWIBRIDGE_TOOLS_SECRET); "
                             "every request is signed")
        return self

    def function(self, name: str) -> ToolFunctionConfig | None:
        return next((f for f in self.functions if f.name == name), None)
