"""Handoff relay across platforms: a Slack customer, agents on the Zendesk desk.

One web process serves both adapters (uvicorn, lifespan on) against the Slack and Zendesk
emulators; the relay runs in the adapters' lifetime loops with a short polling interval.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.discord import build_client, discord_endpoints
from adapters.discord.settings import DiscordSettings
from adapters.slack import SlackAdapter
from adapters.zendesk import mount
from bot.app import create_app
from bot.engine import Engine, Responder
from bot.model import ConversationKey, Owner
from bot.relay import Relay, RelayConfig
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.adapters.discord.fake_discord import TOKEN as DISCORD_TOKEN
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.adapters.slack.conftest import AGENTS_CHANNEL, signature_headers
from tests.adapters.slack.conftest import make_settings as slack_settings
from tests.adapters.slack.conftest import payload as slack_payload
from tests.adapters.slack.emulator import SlackEmulator
from tests.adapters.zendesk.conftest import comment_event, signed_headers
from tests.adapters.zendesk.conftest import make_settings as zendesk_settings
from tests.adapters.zendesk.emulator import AGENT_ID, ZendeskEmulator

pytestmark = pytest.mark.model

DM = "D0DM"
KEY = ConversationKey("slack", "T0TEST", DM, "")


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until `condition()` holds, checking every 20 ms."""
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"condition not met within {within}s")


@asynccontextmanager
async def _web(
    tmp_path: Path, kb: KnowledgeBase, slack: SlackEmulator, zendesk: ZendeskEmulator
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = Relay(store, RelayConfig(desk="zendesk", timeout_s=60, poll_s=0.05))
    retriever = Retriever(kb)
    engine = Engine(store, Responder(retriever, confidence_model(kb)), handoff_sink=relay)
    services = Services(Settings(data_dir=tmp_path), store, kb, retriever, engine, relay)
    adapter = SlackAdapter(services, slack_settings(slack))
    try:
        async with _serve_app(services, adapter, zendesk) as http:
            yield http, services
    finally:
        store.close()


@asynccontextmanager
async def _serve_app(
    services: Services, adapter: SlackAdapter, zendesk: ZendeskEmulator | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app with the Slack adapter (and Zendesk, when given) on uvicorn."""
    adapters: dict[str, Any] = {"slack": lambda app, _services: adapter.attach(app)}
    if zendesk is not None:
        settings = zendesk_settings(zendesk)
        adapters["zendesk"] = lambda app, svc: mount(app, svc, settings=settings)
    app = create_app(services, adapters=adapters)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await _until(lambda: server.started or task.done())
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _slack_dm(http: httpx.AsyncClient, text: str, n: int) -> None:
    body = slack_payload("message_im")
    body["event_id"] = f"Ev0SZ{n}"
    body["event"].update(text=text, ts=f"1700007{n:03d}.000001", client_msg_id=f"sz-{n}")
    await _slack_event(http, body)


async def _slack_event(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signature_headers(raw)}
    response = await http.post("/slack/events", content=raw, headers=headers)
    assert response.status_code == 200


async def _zendesk_comment(http: httpx.AsyncClient, event: dict[str, Any]) -> Any:
    raw = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", **signed_headers(raw)}
    response = await http.post("/zendesk/webhook", content=raw, headers=headers)
    assert response.status_code == 200
    return response.json()


def _dm_texts(slack: SlackEmulator) -> list[str]:
    return [m["text"] for m in slack.messages[DM]]


async def test_slack_customer_zendesk_agents(tmp_path: Path, sample_kb: KnowledgeBase) -> None:
    slack = SlackEmulator()
    await slack.start()
    zendesk = ZendeskEmulator()
    zendesk.start()
    try:
        async with _web(tmp_path, sample_kb, slack, zendesk) as (http, services):
            relay = services.relay
            assert relay is not None
            await _slack_dm(http, "I want to talk to a person", 1)
            # The Zendesk desk opens a ticket for the Slack conversation.
            await _until(lambda: bool(zendesk.tickets))
            [(ticket_id, ticket)] = list(zendesk.tickets.items())
            assert ticket["external_id"] == f"supportbot:{KEY}"
            await _until(lambda: len(_dm_texts(slack)) == 1)  # the bot's handoff message

            # The customer's next message becomes an internal note; the bot stays silent.
            await _slack_dm(http, "my invoice shows the wrong amount", 2)
            await _until(
                lambda: any(
                    "my invoice shows the wrong amount" in c["html_body"]
                    for c in zendesk.bot_comments(ticket_id, public=False)
                )
            )
            assert len(_dm_texts(slack)) == 1

            # An agent's public comment claims the conversation and reaches the Slack DM once.
            agent = comment_event(
                ticket_id=ticket_id,
                comment_id=50001,
                body="Hi, this is Ana. I fixed the invoice.",
                author_id=AGENT_ID,
                is_staff=True,
                external_id=f"supportbot:{KEY}",
            )
            assert (await _zendesk_comment(http, agent))["route"] == "relay"
            await _zendesk_comment(http, agent)  # a repeated webhook delivery
            await _until(lambda: len(_dm_texts(slack)) == 3)
            assert _dm_texts(slack)[1:] == [
                relay.config.claimed_text,
                "Hi, this is Ana. I fixed the invoice.",
            ]
            conversation = services.store.find_conversation(KEY)
            assert conversation is not None and conversation.owner is Owner.HUMAN
            link = services.store.relay_link(conversation.id)
            assert link is not None and link.state == "claimed" and link.card_ref == str(ticket_id)

            # !resolve from Zendesk closes the Slack conversation.
            resolve = comment_event(
                ticket_id=ticket_id,
                comment_id=50002,
                body="!resolve",
                author_id=AGENT_ID,
                is_staff=True,
                external_id=f"supportbot:{KEY}",
            )
            await _zendesk_comment(http, resolve)
            await _until(lambda: _dm_texts(slack)[-1] == relay.config.resolved_text)
            conversation = services.store.find_conversation(KEY)
            assert conversation is not None
            assert (conversation.status, conversation.owner) == ("closed", Owner.BOT)
            assert _dm_texts(slack).count("Hi, this is Ana. I fixed the invoice.") == 1
    finally:
        zendesk.stop()
        await slack.stop()


async def test_discord_customer_slack_agents(tmp_path: Path, sample_kb: KnowledgeBase) -> None:
    """Two processes share one database: Discord serves the customer, the web app the desk."""
    slack = SlackEmulator()
    await slack.start()
    fake = FakeDiscord()
    await fake.start()
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    discord_store = Store.from_url(db)
    discord_relay = Relay(discord_store, RelayConfig(desk="slack", poll_s=0.05))
    engine = Engine(
        discord_store,
        Responder(Retriever(sample_kb), confidence_model(sample_kb)),
        handoff_sink=discord_relay,
    )
    settings = DiscordSettings(
        token=DISCORD_TOKEN,
        support_channels=(fake.support_channel,),
        agents_channel=fake.agents_channel,
        api_url=fake.api_url,
        gateway_url=None,
    )
    client = build_client(settings, engine, guild_ready_timeout=0.05)
    web_store = Store.from_url(db)
    web_relay = Relay(web_store, RelayConfig(desk="slack", poll_s=0.05))
    retriever = Retriever(sample_kb)
    web_engine = Engine(
        web_store, Responder(retriever, confidence_model(sample_kb)), handoff_sink=web_relay
    )
    services = Services(
        Settings(data_dir=tmp_path), web_store, sample_kb, retriever, web_engine, web_relay
    )
    adapter = SlackAdapter(services, slack_settings(slack))

    def dm_texts() -> list[str]:
        return [m["content"] for m in fake.bot_messages(fake.dm_channel)]

    def thread_texts(card_ts: str) -> list[str]:
        return [m["text"] for m in slack.messages[AGENTS_CHANNEL] if m.get("thread_ts") == card_ts]

    try:
        with discord_endpoints(settings.api_url, settings.gateway_url):
            task = asyncio.create_task(client.start(DISCORD_TOKEN))
            try:
                await asyncio.wait_for(client.wait_until_ready(), 10)
                async with _serve_app(services, adapter) as http:
                    await fake.post_message(fake.dm_channel, "I want to talk to a person")
                    await _until(lambda: len(dm_texts()) == 1)  # the handoff message
                    await _until(lambda: bool(slack.messages[AGENTS_CHANNEL]))
                    card_ts = str(slack.messages[AGENTS_CHANNEL][0]["ts"])

                    await fake.post_message(fake.dm_channel, "my invoice shows the wrong amount")
                    await _until(
                        lambda: thread_texts(card_ts) == ["my invoice shows the wrong amount"]
                    )
                    assert len(dm_texts()) == 1  # the bot stays silent

                    reply = slack_payload("message_agents_thread")
                    reply["event"].update(
                        text="Hi, this is Ana.", ts="1700006001.000001", thread_ts=card_ts
                    )
                    await _slack_event(http, reply)
                    await _slack_event(http, reply)  # the same event again
                    await _until(lambda: len(dm_texts()) == 3)
                    assert dm_texts()[1:] == [web_relay.config.claimed_text, "Hi, this is Ana."]

                    release = slack_payload("message_agents_thread")
                    release["event_id"] = "Ev0AGENTREL"
                    release["event"].update(
                        text="!release", ts="1700006002.000001", thread_ts=card_ts
                    )
                    await _slack_event(http, release)
                    await _until(lambda: dm_texts()[-1] == web_relay.config.released_text)
                    key = ConversationKey("discord", "@me", str(fake.dm_channel))
                    conversation = web_store.find_conversation(key)
                    assert conversation is not None and conversation.owner is Owner.BOT
                    assert dm_texts().count("Hi, this is Ana.") == 1
            finally:
                await asyncio.wait_for(client.close(), 10)
                await asyncio.wait_for(task, 10)
    finally:
        discord_store.close()
        web_store.close()
        await fake.close()
        await slack.stop()


async def test_web_customer_slack_agents(tmp_path: Path, sample_kb: KnowledgeBase) -> None:
    """The web chat's customer talks to an agent in the Slack agents' channel, in one process.

    The page's part is played over HTTP: it posts messages and polls for relayed ones. The card
    is opened only once the customer's handoff message was handed to the page.
    """
    slack = SlackEmulator()
    await slack.start()
    store = Store.from_url(f"sqlite:///{tmp_path / 'web.db'}")
    relay = Relay(store, RelayConfig(desk="slack", timeout_s=60, poll_s=0.05))
    retriever = Retriever(sample_kb)
    engine = Engine(store, Responder(retriever, confidence_model(sample_kb)), handoff_sink=relay)
    services = Services(Settings(data_dir=tmp_path), store, sample_kb, retriever, engine, relay)
    adapter = SlackAdapter(services, slack_settings(slack))
    conversation, user = "web-visitor-1", "visitor"
    cursor = 0
    seen: list[dict[str, Any]] = []

    async def poll(http: httpx.AsyncClient) -> dict[str, Any]:
        nonlocal cursor
        response = await http.get(
            f"/api/chat/{conversation}/messages", params={"user": user, "after": cursor}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        cursor = body["cursor"]
        seen.extend(body["messages"])
        return body

    async def say(http: httpx.AsyncClient, text: str) -> dict[str, Any]:
        response = await http.post(
            "/api/chat", json={"conversation_id": conversation, "user": user, "text": text}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    try:
        async with _serve_app(services, adapter) as http:
            handoff = await say(http, "I want to talk to a person")
            assert [r["kind"] for r in handoff["replies"]] == ["handoff"]
            assert handoff["owner"] == "human"
            await _until(lambda: bool(slack.messages[AGENTS_CHANNEL]))
            card = slack.messages[AGENTS_CHANNEL][0]
            card_ts = str(card["ts"])
            key = ConversationKey("web", "", conversation)
            info = store.find_conversation(key)
            assert info is not None
            reply = store.get_reply(handoff["replies"][0]["id"])
            assert reply is not None and reply.platform_ref is not None  # posted before the card
            await _until(
                lambda: (
                    (link := store.relay_link(info.id)) is not None
                    and (link.card_ref == f"{AGENTS_CHANNEL}:{card_ts}")
                )
            )

            assert (await say(http, "my invoice shows the wrong amount"))["replies"] == []
            await _until(
                lambda: any(
                    m.get("thread_ts") == card_ts
                    and m["text"] == "my invoice shows the wrong amount"
                    for m in slack.messages[AGENTS_CHANNEL]
                )
            )

            agent = slack_payload("message_agents_thread")
            agent["event"].update(
                text="Hi, this is Ana.", ts="1700009001.000001", thread_ts=card_ts
            )
            await _slack_event(http, agent)
            await _slack_event(http, agent)  # a repeated delivery
            for _ in range(500):
                if len(seen) >= 2:
                    break
                await poll(http)
                await asyncio.sleep(0.02)
            assert [(m["role"], m["text"]) for m in seen] == [
                ("bot", relay.config.claimed_text),
                ("agent", "Hi, this is Ana."),
            ]
            assert seen[1]["author"] == "U0AGENT"

            resolve = slack_payload("message_agents_thread")
            resolve["event_id"] = "Ev0AGENTRES"
            resolve["event"].update(text="!resolve", ts="1700009002.000001", thread_ts=card_ts)
            await _slack_event(http, resolve)
            for _ in range(500):
                if (await poll(http))["owner"] == "bot" and len(seen) >= 3:
                    break
                await asyncio.sleep(0.02)
            assert seen[-1]["text"] == relay.config.resolved_text
            assert [m["text"] for m in seen].count("Hi, this is Ana.") == 1
            info = store.find_conversation(key)
            assert info is not None and (info.owner, info.status) == (Owner.BOT, "closed")
    finally:
        store.close()
        await slack.stop()
