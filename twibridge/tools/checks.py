"""``[tools]`` checks that need more than pydantic: run by ``validate-config`` and ``serve``.

Kept out of :mod:`twibridge.config.tools` because they need other wings (the
secret's form is :mod:`twibridge.webhooks.signing`'s, the WAV reader is
:mod:`twibridge.audio.wavfile`'s) and the file system.
"""

from __future__ import annotations

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from twibridge.audio.wavfile import AudioFileError, load_caller_audio
from twibridge.config import Config
from twibridge.webhooks import signing


def problems(config: Config) -> list[str]:
    """One line per bad ``[tools]`` key, naming it; empty when all is well."""
    cfg = config.tools
    out: list[str] = []
    secret = cfg.secret.get_secret_value()
    if secret:
        why = signing.secret_problem(secret)
        if why is not None:
            out.append(f"tools.secret: {why}")
    for i, fn in enumerate(cfg.functions):
        try:
            validator_for(fn.parameters).check_schema(fn.parameters)
        except SchemaError as exc:
            where = ".".join(str(p) for p in exc.path)
            out.append(f"tools.functions.{i}.parameters: not a valid JSON Schema"
                       f"{' at ' + where if where else ''}: {exc.message}")
    if cfg.thinking_sound:
        try:
            load_caller_audio(cfg.thinking_sound)
        except AudioFileError as exc:
            out.append(f"tools.thinking_sound: cannot read {cfg.thinking_sound}: {exc.reason}")
    return out
