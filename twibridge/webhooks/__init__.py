"""Requests twibridge signs and sends: tools, the routing lookup, post-call reports.

One implementation for all (:mod:`twibridge.webhooks.signing`, on the
``standardwebhooks`` reference library) and one bounded HTTP client
(:mod:`twibridge.webhooks.client`): every outgoing request carries
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``,
has a deadline, and reads at most a bounded answer.
"""
