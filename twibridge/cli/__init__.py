"""The ``twibridge`` command line (Typer): one module per command.

Only typer and the stdlib are imported at module level: the server stack
(quart_trio, hypercorn, twilio.rest) costs ~0.5 s to import, so each command
imports what it needs inside, and ``twibridge --help`` starts fast.

Exit codes: 0 success; 1 runtime failure; 2 bad usage, input or config.
"""

from __future__ import annotations

from twibridge.cli.main import app, main

__all__ = ["app", "main"]
