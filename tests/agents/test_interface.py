"""Every provider behind ``agents/base.py`` implements the whole session interface.

Providers are looked up by name at run time (:data:`twibridge.agents.PROVIDERS`), so
``mypy`` never sees a session class against :class:`~twibridge.agents.base.AgentSession`:
a missing method would only show as an AttributeError on a live call (an idle check-in,
a tool result).  This checks each one by its ``connect`` annotation.
"""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

from twibridge.agents import PROVIDERS
from twibridge.agents.base import AgentProvider, AgentSession


def members(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if not n.startswith("_") and callable(v)}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_the_provider_and_its_session_implement_the_interface(name: str) -> None:
    module_name, _, cls_name = PROVIDERS[name].partition(":")
    provider = getattr(importlib.import_module(module_name), cls_name)
    assert members(AgentProvider) <= {n for n in dir(provider)}, name
    session = typing.get_type_hints(provider.connect)["return"]
    missing = {m for m in members(AgentSession) if not inspect.iscoroutinefunction(getattr(session, m, None))}
    assert not missing, f"{name}: {session.__name__} lacks {sorted(missing)}"
