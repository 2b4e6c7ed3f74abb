"""Whole conversations through the web chat API, as a customer would have them.

Each conversation has its own `conversation_id`, so the scenarios share one bot (module scope)
without sharing context.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.model import ConversationKey, Role
from bot.service import Services
from tests.support import sample_services

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(tmp_path_factory.mktemp("scenarios"), sample_kb_dir, embedder) as built:
        yield built


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


class Conversation:
    """One customer's chat window: posts each message, expects exactly one reply to each."""

    def __init__(self, client: TestClient, services: Services, user: str = "ann") -> None:
        self.client = client
        self.services = services
        self.user = user
        self.id = f"scenario-{uuid.uuid4().hex[:12]}"

    def say(self, text: str) -> dict[str, Any]:
        response = self.client.post(
            "/api/chat",
            json={
                "conversation_id": self.id,
                "user": self.user,
                "text": text,
                "message_id": uuid.uuid4().hex,
            },
        )
        assert response.status_code == 200, response.text
        replies = response.json()["replies"]
        assert len(replies) == 1, replies
        reply: dict[str, Any] = replies[0]
        return reply

    def query_of(self, reply: dict[str, Any]) -> str:
        """The retrieval query the bot used for a reply, as stored."""
        stored = self.services.store.get_reply(reply["id"])
        assert stored is not None
        return stored.query

    def roles(self) -> list[Role]:
        key = ConversationKey("web", "", self.id)
        info = self.services.store.get_or_create_conversation(key, self.user)
        return [turn.role for turn in self.services.store.history(info.id, limit=100)]


@pytest.fixture
def conversation(client: TestClient, services: Services) -> Conversation:
    return Conversation(client, services)


def source_ids(reply: dict[str, Any]) -> list[str]:
    return [source["id"] for source in reply["sources"]]


def action_kinds(reply: dict[str, Any]) -> list[str]:
    return [action["kind"] for action in reply["actions"]]


def assert_offers(reply: dict[str, Any], entry: str) -> None:
    """Answered with `entry`, or asked which topic was meant with `entry` among the choices."""
    assert reply["kind"] in ("answer", "clarify"), reply
    if reply["kind"] == "answer":
        assert source_ids(reply)[0] == entry, reply
    else:
        assert entry in source_ids(reply), reply


def test_greeting_question_thanks_goodbye(conversation: Conversation) -> None:
    hello = conversation.say("Hi there!")
    answer = conversation.say("How do I export a note as a PDF?")
    thanks = conversation.say("thanks!")
    bye = conversation.say("bye")

    assert hello["kind"] == "smalltalk"
    assert "Lumen Assistant" in hello["text"]
    assert answer["kind"] == "answer"
    assert source_ids(answer)[0] == "export-pdf"
    assert "Export > PDF" in answer["text"]
    assert {"feedback_up", "feedback_down"} <= set(action_kinds(answer))
    assert thanks["kind"] == "smalltalk"
    assert "welcome" in thanks["text"].lower()
    assert bye["kind"] == "smalltalk"
    assert "goodbye" in bye["text"].lower()
    assert conversation.roles() == [Role.USER, Role.BOT] * 4


def test_follow_up_price_for_business(conversation: Conversation) -> None:
    plus = conversation.say("How much does the Plus plan cost?")
    assert plus["kind"] == "answer"
    assert source_ids(plus)[0] == "pricing-plus"

    business = conversation.say("and for business?")

    assert_offers(business, "pricing-business")


def test_follow_up_storage_for_business(conversation: Conversation) -> None:
    free = conversation.say("How much storage do I get on the free plan?")
    assert source_ids(free)[0] == "storage-limit-free"

    business = conversation.say("and if we're on Business?")

    assert business["kind"] == "answer"
    assert source_ids(business)[0] == "storage-limit-business"
    assert "free plan" in conversation.query_of(business).lower()


def test_follow_up_other_export_format(conversation: Conversation) -> None:
    pdf = conversation.say("How do I export a note as PDF?")
    assert source_ids(pdf)[0] == "export-pdf"

    markdown = conversation.say("can I get it in markdown instead?")

    assert markdown["kind"] == "answer"
    assert source_ids(markdown)[0] == "export-markdown"


def test_offline_on_phone_then_desktop(conversation: Conversation) -> None:
    phone = conversation.say("Can I use Lumen offline on my phone?")
    assert phone["kind"] == "answer"
    assert source_ids(phone)[0] == "offline-mobile"

    desktop = conversation.say("what about the desktop app?")

    assert_offers(desktop, "offline-desktop")
    assert "offline" in conversation.query_of(desktop).lower()
    # The follow-up asks about something new: not the phone answer again.
    assert desktop["text"] != phone["text"]


def test_offline_on_phone_then_short_desktop_follow_up(conversation: Conversation) -> None:
    phone = conversation.say("Can I use Lumen offline on my phone?")
    assert source_ids(phone)[0] == "offline-mobile"

    desktop = conversation.say("and on my desktop?")

    assert_offers(desktop, "offline-desktop")


def test_out_of_scope_question_offers_a_person(conversation: Conversation) -> None:
    conversation.say("hello")

    reply = conversation.say("What's the weather in Paris tomorrow?")

    assert reply["kind"] == "fallback"
    assert reply["sources"] == []
    assert "handoff" in action_kinds(reply)
    assert "person" in reply["text"]


def test_recipe_request_is_not_answered(conversation: Conversation) -> None:
    reply = conversation.say("Give me a lasagna recipe")

    assert reply["kind"] != "answer"
    assert "handoff" in action_kinds(reply) or reply["kind"] == "clarify"


def test_separate_conversations_do_not_share_context(
    client: TestClient, services: Services
) -> None:
    first = Conversation(client, services, user="ann")
    second = Conversation(client, services, user="ann")
    free = first.say("How much storage do I get on the free plan?")
    assert source_ids(free)[0] == "storage-limit-free"

    elsewhere = second.say("and if we're on Business?")
    here = first.say("and if we're on Business?")

    # Only the conversation that asked about storage reads the follow-up in that light.
    assert second.query_of(elsewhere) == "and if we're on Business?"
    assert "storage" in first.query_of(here).lower()
    assert source_ids(here)[0] == "storage-limit-business"
    assert second.roles() == [Role.USER, Role.BOT]
    assert first.roles() == [Role.USER, Role.BOT] * 2


def test_same_user_in_two_conversations_keeps_them_apart(
    client: TestClient, services: Services
) -> None:
    billing = Conversation(client, services, user="bob")
    export = Conversation(client, services, user="bob")

    billing.say("How much does the Plus plan cost?")
    export.say("How do I export a note as PDF?")
    markdown = export.say("can I get it in markdown instead?")

    assert source_ids(markdown)[0] == "export-markdown"
    assert "plus" not in export.query_of(markdown).lower()
