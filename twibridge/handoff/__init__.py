"""Handing the caller to a person (issue #21): cold and warm transfers.

* :mod:`~twibridge.handoff.conference` — the pure parts: conference names,
  the TwiML of both legs, what a leg's status means;
* :mod:`~twibridge.handoff.warm` — ringing the human's leg and watching it;
* :mod:`~twibridge.handoff.transfer` — one call's transfers, run by a task of
  the call's nursery (cold or warm, the hold, the agent told the outcome).

A sibling of :mod:`twibridge.call`: the call imports this wing, never the
other way (the call is seen through small protocols).
"""
