"""Web chat customers in the handoff relay: the page polls for what agents wrote.

The web app (its lifespan runs the relay's delivery loop for the web platform) on
`build_services` with a desk configured, the real model and a SQLite file. The desk is the one
in-memory class here (the Slack desk through its emulator is in tests/scenarios).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.web.relay import WebCustomerChannel
from bot.app import create_app
from bot.handoff import HandoffRequest
from bot.model import ConversationKey
from bot.relay import CustomerChannel, Relay
from bot.service import Services
from tests.support import sample_services

pytestmark = pytest.mark.model


class MemoryDesk:
    def __init__(self) -> None:
        self.cards: list[HandoffRequest] = []
        self.posts: list[tuple[str, str]] = []

    async def open_card(self, request: HandoffRequest) -> str:
        self.cards.append(request)
        return f"card-{len(self.cards)}"

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        self.posts.append((card_ref, text))
        return None


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(
        tmp_path_factory.mktemp("web-relay"),
        sample_kb_dir,
        embedder,
        handoff_desk="slack",
        relay_poll_s=0.05,
    ) as built:
        yield built


@pytest.fixture(scope="module")
def desk(services: Services) -> MemoryDesk:
    made = MemoryDesk()
    assert services.relay is not None
    services.relay.register_desk("slack", made)
    return made


@pytest.fixture(scope="module")
def client(services: Services, desk: MemoryDesk) -> Iterator[TestClient]:
    with TestClient(create_app(services, adapters={})) as test_client:
        yield test_client


def _relay(services: Services) -> Relay:
    assert services.relay is not None
    return services.relay


def _until(condition: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"condition not met within {within}s")


class Page:
    """What the chat page does: post messages, poll for relayed ones with a cursor."""

    def __init__(self, client: TestClient, user: str = "ann") -> None:
        self.client = client
        self.user = user
        self.id = uuid.uuid4().hex
        self.cursor = 0

    def say(self, text: str) -> Any:
        response = self.client.post(
            "/api/chat", json={"conversation_id": self.id, "user": self.user, "text": text}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def poll(self) -> Any:
        response = self.client.get(
            f"/api/chat/{self.id}/messages", params={"user": self.user, "after": self.cursor}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        self.cursor = body["cursor"]
        return body


def test_the_web_channel_is_a_customer_channel() -> None:
    channel = WebCustomerChannel()
    assert isinstance(channel, CustomerChannel)
    with pytest.raises(ValueError, match="slack"):
        asyncio.run(channel.post(ConversationKey("slack", "T", "C", ""), "hi", post_id="relay-1"))


def test_agents_replies_reach_the_web_page(
    client: TestClient, services: Services, desk: MemoryDesk
) -> None:
    relay = _relay(services)
    page = Page(client)
    body = page.say("I want to talk to a person")
    assert [r["kind"] for r in body["replies"]] == ["handoff"]
    assert body["owner"] == "human"
    assert page.poll() == {"messages": [], "cursor": 0, "owner": "human"}

    # The web route recorded the handoff message as posted, so the desk may open the card.
    assert asyncio.run(relay.deliver_pending("slack")) == 1
    [card] = desk.cards
    assert card.key == ConversationKey("web", "", page.id)

    # The customer writes on: silent bot, the message goes to the card.
    assert page.say("my invoice is wrong") == {"replies": [], "owner": "human"}
    asyncio.run(relay.deliver_pending("slack"))
    assert desk.posts == [("card-1", "my invoice is wrong")]

    relay.agent_said("card-1", "Ana", "Hi, I'm Ana. Let me look at it.", "a1")
    messages: list[dict[str, Any]] = []
    _until(lambda: messages.extend(page.poll()["messages"]) or len(messages) >= 2)
    assert [(m["role"], m["author"], m["text"]) for m in messages] == [
        ("bot", "relay", relay.config.claimed_text),
        ("agent", "Ana", "Hi, I'm Ana. Let me look at it."),
    ]
    assert messages[0]["id"] < messages[1]["id"] == page.cursor
    assert page.poll() == {"messages": [], "cursor": page.cursor, "owner": "human"}

    relay.agent_said("card-1", "Ana", "!resolve", "a2")
    released = _until(lambda: page.poll()["messages"])
    assert [m["text"] for m in released] == [relay.config.resolved_text]
    assert page.poll()["owner"] == "bot"  # the page stops polling
    [answer] = page.say("How do I reset my password?")["replies"]
    assert answer["kind"] == "answer"


def test_only_the_conversations_customer_can_read_it(client: TestClient) -> None:
    page = Page(client)
    page.say("hello")
    assert page.poll()["owner"] == "bot"
    for params in ({"user": "mallory"}, {"user": "ann", "after": 0}):
        path = f"/api/chat/{page.id if params['user'] != 'ann' else 'unknown'}/messages"
        response = client.get(path, params=params)
        assert response.status_code == 404
        assert "send a message first" in response.json()["detail"]
    bad = client.get(f"/api/chat/{page.id}/messages", params={"user": "ann", "after": -1})
    assert bad.status_code == 422
    missing_user = client.get(f"/api/chat/{page.id}/messages")
    assert missing_user.status_code == 422
