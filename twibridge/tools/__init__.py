"""Functions the agent asks the bridge to run against the business's systems (issue #17).

* :mod:`~twibridge.tools.executor`: one tool call, from the model's
  arguments to the output the model hears (validation, the signed ``POST``,
  every failure as ``{"error": ...}``), logged and measured;
* :mod:`~twibridge.tools.calltools`: one call's tool calls, concurrent and
  bounded inside the call's nursery, with the thinking sound;
* :mod:`~twibridge.tools.thinking`: when the thinking sound starts and stops;
* :mod:`~twibridge.tools.checks`: the config checks that need I/O;
* :mod:`~twibridge.tools.spec`: `ToolSpec`, `ToolCall`, `CallIdentity` (re-exported by `agents.base`).
"""
