"""The server process: the Quart-Trio app and its routes (``app``), the
Quart/Hypercorn glue and guards (``asgi``, ``hypercorn_fix``), ``--workers``
(``workers``), systemd notify/watchdog (``systemd``) and Prometheus metrics
(``metrics``).  It hands each Media Streams socket to :mod:`twibridge.call`.

Kept empty of imports: ``twibridge --help`` must not pay for the server stack.
"""
