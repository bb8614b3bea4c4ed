"""pytest-trio runs every async test (trio_mode = true in pyproject)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from twibridge import logs  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class LogCapture:
    """Every JSON log line the code under test wrote, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


@pytest.fixture(autouse=True)
def captured_logs() -> Iterator[LogCapture]:
    cap = LogCapture()
    logs.configure("debug", "json", stream=cap.stream)
    yield cap
