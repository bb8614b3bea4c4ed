"""Redaction of transcripts, sans-IO: built-in patterns plus ``[redact] extra`` regexes.

Applied once, where a transcript line enters the call (runner.py), so every
copy of it — the debug log line, the registry summary, the Redis history,
the ``call_ended`` report, the HTML page — only ever holds the redacted text.

Built-ins (``[redact] patterns``):

* ``card`` — 13 to 19 digits, optionally grouped by spaces or dashes, that
  pass the Luhn check (so an order number that happens to be long stays).
* ``ssn`` — a US social security number ``123-45-6789`` / ``123 45 6789``
  (the ranges the SSA never issues, 000/666/9xx, 00, 0000, are left alone).
* ``email`` — an e-mail address.

Each match becomes ``[redacted:<name>]`` (``[redacted]`` for an ``extra``
regex).  What a speech recogniser writes out as words ("four two four two")
is not caught by the built-ins: add an ``extra`` pattern if your provider
does that.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812) over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    """A run of digit groups: redact the longest run of whole groups that is a card number.

    Groups, not the whole run, because speech puts numbers side by side:
    "option 2 4111 1111 1111 1111" is a "2" and a card, not a 17-digit number.
    """
    text = m.group(0)
    groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", text)]
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += text[groups[j][0]:groups[j][1]]
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_ok(digits):
                span = (groups[i][0], groups[j][1])
                if best is None or span[1] - span[0] > best[1] - best[0]:
                    best = span
    if best is None:
        return text
    return text[:best[0]] + "[redacted:card]" + text[best[1]:]


def _sub(rx: re.Pattern[str], mark: str) -> Callable[[str], str]:
    return lambda s: rx.sub(mark, s)


class Redactor:
    """Built-in patterns by name (``card``, ``ssn``, ``email``) and extra regexes.

    Raises:
        ValueError: an unknown built-in name or a regex that does not compile
            (config validation catches both first).
    """

    def __init__(self, patterns: Sequence[str] = ("card", "ssn"), extra: Sequence[str] = ()) -> None:
        steps: list[Callable[[str], str]] = []
        for name in patterns:
            if name == "card":
                steps.append(lambda s: _CARD.sub(_card, s))
            elif name == "ssn":
                steps.append(lambda s: _SSN.sub("[redacted:ssn]", s))
            elif name == "email":
                steps.append(lambda s: _EMAIL.sub("[redacted:email]", s))
            else:
                raise ValueError(f"unknown redaction pattern {name!r}")
        for rx in extra:
            steps.append(_sub(re.compile(rx), "[redacted]"))
        self._steps = steps

    def __call__(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text
