"""The azure_openai provider (the OpenAI adapter, re-pointed) against the fake Azure endpoint."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from agent_support import connect_error, connected, speak
from fakes import silence, tone
from fakes.azure_openai import API_KEY, DEPLOYMENT, FakeAzureRealtime
from twibridge.agents import PROVIDERS, make_provider
from twibridge.agents.azure_openai import AzureOpenAIProvider
from twibridge.agents.base import AgentDisconnected, AgentFailed, AudioOut, CallInfo, HangupRequest, Transcript
from twibridge.config import Config, ConfigError, build_config

CALL = CallInfo(call_sid="CA" + "2" * 32, stream_sid="MZ" + "2" * 32)
UTTERANCE = silence(200) + tone(600) + silence(700)


def config(url: str, key: str = API_KEY, deployment: str = DEPLOYMENT) -> Config:
    return build_config({"agent": {"provider": "azure_openai", "azure_openai": {
        "api_key": key, "url": url, "deployment": deployment}}})


@asynccontextmanager
async def fake_server(**kwargs: object) -> AsyncIterator[FakeAzureRealtime]:
    fake = FakeAzureRealtime(**kwargs)
    async with trio.open_nursery() as nursery:
        await fake.serve(nursery)
        yield fake
        await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()


def test_registered_and_config_rules() -> None:
    assert "azure_openai" in PROVIDERS
    assert isinstance(make_provider(config("wss://r.openai.azure.com/openai/v1/realtime")), AzureOpenAIProvider)
    with pytest.raises(ConfigError, match=r"agent\.azure_openai\.url: the GA endpoint takes no api-version"):
        config("wss://r.openai.azure.com/openai/realtime?api-version=2025-04-01-preview")
    with pytest.raises(ConfigError, match=r"agent\.azure_openai\.deployment: required"):
        config("wss://r.openai.azure.com/openai/v1/realtime", deployment="")
    provider = AzureOpenAIProvider(config("wss://r.openai.azure.com/openai/v1/realtime"))
    assert provider.url == f"wss://r.openai.azure.com/openai/v1/realtime?model={DEPLOYMENT}"


async def test_api_key_header_deployment_query_and_a_whole_turn(captured_logs: object) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(AzureOpenAIProvider(config(fake.url)), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(Transcript))
    (headers,) = fake.upgrades
    assert headers["api-key"] == API_KEY and "authorization" not in headers
    assert fake.received[0]["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert fake.received[0]["session"]["model"] == DEPLOYMENT
    assert b"".join(a.ulaw for a in ev.of(AudioOut)) == tone(800)
    assert fake.errors_sent == []
    assert API_KEY not in captured_logs.text  # type: ignore[attr-defined]


async def test_barge_in_truncates_like_openai() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, \
                connected(AzureOpenAIProvider(config(fake.url)), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(AudioOut)) >= 3)
            await session.interrupt(ev.of(AudioOut)[0].item_id, 200)
            await fake.wait_for(lambda: fake.of_type("conversation.item.truncate"))
    assert fake.of_type("conversation.item.truncate")[0]["audio_end_ms"] == 200
    assert fake.errors_sent == []


async def test_end_call_tool_is_a_hangup() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(AzureOpenAIProvider(config(fake.url)), CALL) as (session, ev):
            fake.function_call = ("end_call", '{"reason":"done"}')
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(HangupRequest))
            await fake.wait_for(lambda: fake.of_type("conversation.item.create"))
    assert ev.of(HangupRequest) == [HangupRequest("end_call: done")]


async def test_bad_key_fails_at_once_and_is_never_shown(captured_logs: object) -> None:
    wrong = "azwrong0123456789abcdef0123456789"
    with trio.fail_after(10):
        async with fake_server() as fake:
            error = await connect_error(AzureOpenAIProvider(config(fake.url, wrong)), CALL)
    assert isinstance(error, AgentFailed) and "401" in str(error)
    assert wrong not in str(error) and wrong not in captured_logs.text  # type: ignore[attr-defined]
    assert len(fake.upgrades) == 1  # no retry inside the provider


async def test_unknown_deployment_is_final() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            error = await connect_error(AzureOpenAIProvider(config(fake.url, deployment="nope")), CALL)
    assert isinstance(error, AgentFailed) and "404" in str(error)


async def test_drop_then_reconnect_carries_the_conversation() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            provider = AzureOpenAIProvider(config(fake.url))
            async with connected(provider, CALL) as (session, ev):
                await speak(session, UTTERANCE)
                await ev.wait_for(lambda: ev.of(Transcript))
                fake.drop_after_appends = 1
                try:
                    await speak(session, silence(100))
                except AgentDisconnected:
                    pass
                await ev.wait_for(lambda: ev.error)
            async with connected(provider, CALL):
                pass
    seeded = [m for m in fake.of_type("conversation.item.create") if m["item"]["type"] == "message"]
    assert seeded[0]["item"]["content"][0]["text"] == "(800 ms of reply)"
