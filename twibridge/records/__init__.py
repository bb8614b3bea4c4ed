"""What a call leaves behind: its recording, its redacted transcript, its signed report.

* :mod:`~twibridge.records.redact` — built-in and configured patterns, applied to
  every transcript line before it leaves memory (logs, summaries, webhooks, Redis).
* :mod:`~twibridge.records.report` — the ``call_ended`` report, sans-IO: its fields,
  the fixed ``ended_reason`` list.
* :mod:`~twibridge.records.spool` and :mod:`~twibridge.records.delivery` — a report is
  on disk (fsync'd) before its first attempt, retried with bounded backoff, kept
  across restarts, claimed in Redis so two instances never both deliver it.
* :mod:`~twibridge.records.recording` — the stereo WAV of what was heard, written by
  a task of its own behind a bounded queue.
* :mod:`~twibridge.records.html` — one self-contained page picturing a call.
"""
