"""One call: the Media Streams socket bridged to one agent session.

``runner`` holds the call's life top to bottom (one nursery, its tasks, the
bounded channels between them, teardown); ``speaker``, ``playout`` and
``replies`` are the agent's voice (pacing, marks, barge-in); ``jitter`` puts
caller frames in order; ``control`` is what the call asks of Twilio's REST API
(hang up, transfer, fallback).  Nothing here knows HTTP or Hypercorn: the
server wing hands a call its socket.
"""
