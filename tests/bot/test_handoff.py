"""Handoffs with no agents' desk configured (the default): honest replies, the bot keeps answering.

Through the web app on `build_services` with default settings, the real model and a SQLite file.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from bot.app import create_app
from bot.handoff import NO_DESK_TEXT, NoDeskHandoffSink
from bot.model import ConversationKey, InboundMessage, Owner, ReplyKind
from bot.service import Services
from bot.storage.tables import Handoff
from tests.support import sample_services

pytestmark = pytest.mark.model

CONTACT = "email help@lumen.example"


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(
        tmp_path_factory.mktemp("no-desk"), sample_kb_dir, embedder, handoff_contact=CONTACT
    ) as built:
        yield built


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, adapters={})) as test_client:
        yield test_client


def _chat(client: TestClient, conversation: str, text: str) -> Any:
    response = client.post(
        "/api/chat",
        json={"conversation_id": conversation, "user": "ann", "text": text},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _handoffs(services: Services, conversation_id: str) -> list[Handoff]:
    query = (
        select(Handoff).where(Handoff.conversation_id == conversation_id).order_by(col(Handoff.id))
    )
    with Session(services.store.engine) as session:
        return list(session.exec(query).all())


def test_no_desk_is_the_default_sink(services: Services) -> None:
    assert services.relay is None
    assert isinstance(services.engine.handoff_sink, NoDeskHandoffSink)


def test_without_a_desk_the_customer_gets_the_contact_and_the_bot_keeps_answering(
    client: TestClient, services: Services
) -> None:
    conversation = uuid.uuid4().hex
    body = _chat(client, conversation, "I want to talk to a person")
    [reply] = body["replies"]
    assert reply["kind"] == "handoff"
    assert reply["text"] == NO_DESK_TEXT.replace("{contact}", CONTACT)
    assert "will reply" not in reply["text"]
    assert body["owner"] == "bot"  # the page does not wait for a person

    key = ConversationKey("web", "", conversation)
    info = services.store.find_conversation(key)
    assert info is not None and info.owner is Owner.BOT
    # Recorded for monitoring: a handoff row that leaves the bot in charge.
    [row] = _handoffs(services, info.id)
    assert (row.from_owner, row.to_owner, row.actor) == ("bot", "bot", "bot")
    assert row.reason is not None and row.reason.startswith("no_desk:customer_request")
    stored = services.store.get_reply(reply["id"])
    assert stored is not None and stored.kind is ReplyKind.HANDOFF and stored.text == reply["text"]
    assert stored.platform_ref == f"web:reply:{reply['id']}"  # handed to the page

    # Not silenced: the next question is answered.
    [answer] = _chat(client, conversation, "How do I reset my password?")["replies"]
    assert answer["kind"] == "answer"
    assert services.store.relay_link(info.id) is None


def test_a_zendesk_ticket_is_in_a_desk_already_and_is_handed_over(services: Services) -> None:
    """The Zendesk adapter hands the ticket to its agents on the engine's handoff reply."""
    message = InboundMessage(
        platform="zendesk",
        workspace="acme",
        channel="4242",
        user="900",
        message_id="c1",
        text="I want to talk to a person",
        addressed=True,
    )
    [reply] = services.engine.handle(message)
    assert reply.kind is ReplyKind.HANDOFF
    assert "person" in reply.text and CONTACT not in reply.text
    assert services.engine.owner_of(message.conversation) is Owner.HUMAN
    follow_up = InboundMessage(
        platform="zendesk",
        workspace="acme",
        channel="4242",
        user="900",
        message_id="c2",
        text="How do I reset my password?",
        addressed=True,
    )
    assert services.engine.handle(follow_up) == []  # the agents' now


def test_an_agent_message_waits_for_the_customer_turn_in_progress(services: Services) -> None:
    """`agent_wrote` takes the conversation's turn lock: a turn in progress (here: the lock
    held by this thread) finishes before the takeover is recorded."""
    key = ConversationKey("web", "", uuid.uuid4().hex)
    services.engine.handle(InboundMessage("web", "", key.channel, "ann", "m1", "hello"))
    taken = threading.Event()

    def agent() -> None:
        services.engine.agent_wrote(key, "agent-7", "I can help with that", "agent-m1")
        taken.set()

    with services.store.conversation_lock(str(key)):
        worker = threading.Thread(target=agent)
        worker.start()
        assert not taken.wait(0.5), "the agent's message went in during the turn"
        conversation = services.store.find_conversation(key)
        assert conversation is not None and conversation.owner is Owner.BOT
    assert taken.wait(30)
    worker.join(5)
    conversation = services.store.find_conversation(key)
    assert conversation is not None and conversation.owner is Owner.HUMAN
