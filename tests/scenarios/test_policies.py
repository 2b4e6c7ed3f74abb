"""Conversation policies in whole conversations: the real model, the sample knowledge base, SQLite.

Customers talk through the web chat API (`/api/chat`, `/api/feedback`); bursts and head starts go
through the engine's debouncer on a manual clock. Handoffs are captured by a recording sink. A
policy file gives two web conversations channel overrides, as a deployment would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.debounce import ManualClock
from bot.handoff import HandoffRequest
from bot.model import ConversationKey, InboundMessage, Owner, Reply, ReplyKind, Role, Turn
from bot.service import Services
from policies.config import Tone
from policies.texts import BUILT_IN
from tests.support import sample_services

pytestmark = pytest.mark.model

INFORMAL = BUILT_IN[Tone.INFORMAL]
#: Channel overrides for two conversation ids (a web conversation's id is its channel).
POLICIES = {
    "handoff": {"expected_wait": "within 2 hours"},
    "channels": {
        "web:strict-desk": {"fallback": {"handoff_on_misses": "perform"}},
        "web:formal-desk": {
            "persona": {"tone": "formal", "sign_off": "The Lumen support team"},
        },
    },
}


class RecordingSink:
    """A handoff sink that keeps every request."""

    def __init__(self) -> None:
        self.requests: list[HandoffRequest] = []

    def request(self, handoff: HandoffRequest) -> None:
        self.requests.append(handoff)

    def for_conversation(self, channel: str) -> list[HandoffRequest]:
        return [r for r in self.requests if r.key.channel == channel]


@pytest.fixture(scope="module")
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory,
    sample_kb_dir: Path,
    embedder: object,
    sink: RecordingSink,
) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("policy-scenarios")
    policy_file = root / "policies.yaml"
    policy_file.write_text(yaml.safe_dump(POLICIES))
    with sample_services(
        root, sample_kb_dir, embedder, handoff_sink=sink, policies=policy_file
    ) as built:
        yield built


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, adapters={})) as test_client:
        yield test_client


class Chat:
    """One customer's web chat: posts messages, returns the replies (none when the bot is quiet)."""

    def __init__(
        self, client: TestClient, services: Services, channel: str | None = None, user: str = "ann"
    ) -> None:
        self.client = client
        self.services = services
        self.user = user
        self.id = channel or f"policy-{uuid.uuid4().hex[:12]}"
        self.key = ConversationKey("web", "", self.id)

    def send(self, text: str) -> list[dict[str, Any]]:
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
        replies: list[dict[str, Any]] = response.json()["replies"]
        assert len(replies) <= 1, "never more than one reply per turn"
        return replies

    def say(self, text: str) -> dict[str, Any]:
        replies = self.send(text)
        assert len(replies) == 1, f"{text!r} got no reply"
        return replies[0]

    def rate_down(self, reply: dict[str, Any]) -> None:
        response = self.client.post(
            "/api/feedback", json={"reply_id": reply["id"], "user": self.user, "value": "down"}
        )
        assert response.status_code == 200, response.text

    @property
    def conversation_id(self) -> str:
        info = self.services.store.find_conversation(self.key)
        assert info is not None
        return info.id

    def owner(self) -> Owner | None:
        return self.services.engine.owner_of(self.key)

    def status(self) -> str:
        info = self.services.store.get_conversation(self.conversation_id)
        assert info is not None
        return info.status

    def history(self) -> list[Turn]:
        return self.services.store.history(self.conversation_id, limit=100)


@pytest.fixture
def chat(client: TestClient, services: Services) -> Chat:
    return Chat(client, services)


def source_ids(reply: dict[str, Any]) -> list[str]:
    return [source["id"] for source in reply["sources"]]


def action_kinds(reply: dict[str, Any]) -> list[str]:
    return [action["kind"] for action in reply["actions"]]


def assert_handed_over(
    chat: Chat, reply: dict[str, Any], sink: RecordingSink, reason: str
) -> HandoffRequest:
    """The reply says a person takes over, the owner is human, one request reached the sink."""
    assert reply["kind"] == "handoff", reply
    assert reply["text"].startswith("I'm bringing in a person from our support team.")
    assert "usually within 2 hours" in reply["text"]
    assert chat.owner() is Owner.HUMAN
    requests = sink.for_conversation(chat.id)
    assert len(requests) == 1, requests
    request = requests[0]
    assert request.reason.split(":", 1)[0] == reason
    assert request.conversation_id == chat.conversation_id
    assert request.key == chat.key
    assert request.customer == chat.user
    assert request.platform == "web"
    assert request.reply_id == reply["id"]
    assert request.transcript[-1] == Turn(Role.BOT, reply["text"])
    stored = chat.services.store.get_reply(reply["id"])
    assert stored is not None and stored.kind is ReplyKind.HANDOFF
    return request


def assert_silent_now(chat: Chat) -> None:
    """While a person owns the conversation, the bot says nothing but records everything."""
    before = len(chat.history())
    assert chat.send("hello? How do I reset my password?") == []
    history = chat.history()
    assert len(history) == before + 1
    assert history[-1] == Turn(Role.USER, "hello? How do I reset my password?")


# Bursts and head starts (the debouncer) -------------------------------------------------------


def web_message(channel: str, text: str, user: str = "ann") -> InboundMessage:
    return InboundMessage("web", "", channel, user, uuid.uuid4().hex, text)


async def test_a_burst_of_messages_gets_one_answer(services: Services) -> None:
    delivered: list[tuple[InboundMessage, list[Reply]]] = []

    async def deliver(message: InboundMessage, replies: list[Reply]) -> None:
        delivered.append((message, replies))

    clock = ManualClock()
    turns = services.engine.debouncer(deliver, clock=clock)
    channel = f"burst-{uuid.uuid4().hex[:8]}"
    parts = ["hi", "I forgot my password", "how do I reset it?"]

    for part in parts:
        turns.submit(web_message(channel, part))
        await clock.advance(1.0)
    assert delivered == []
    await clock.advance(1.0)  # two seconds after the last part
    await turns.wait_idle()

    assert len(delivered) == 1
    message, replies = delivered[0]
    assert message.text == "how do I reset it?"
    assert [r.kind for r in replies] == [ReplyKind.ANSWER]
    assert replies[0].sources[0].id == "reset-password"
    conversation = services.store.find_conversation(ConversationKey("web", "", channel))
    assert conversation is not None
    history = services.store.history(conversation.id)
    assert [t.role for t in history] == [Role.USER, Role.USER, Role.USER, Role.BOT]
    assert [t.text for t in history[:3]] == parts
    stored = services.store.get_reply(replies[0].id)
    assert stored is not None and "forgot my password" in stored.query


async def test_a_person_answering_first_cancels_the_bot(services: Services) -> None:
    delivered: list[list[Reply]] = []

    async def deliver(message: InboundMessage, replies: list[Reply]) -> None:
        delivered.append(replies)

    clock = ManualClock()
    engine = services.engine
    turns = engine.debouncer(deliver, clock=clock)
    channel = f"shared-{uuid.uuid4().hex[:8]}"
    key = ConversationKey("web", "", channel)
    # The engine's burst window for this channel; a head start comes from the settings as well.
    assert engine.timing_for(key).burst_window_s == 2.0

    turns.submit(web_message(channel, "anyone know how to export a PDF?"))
    await clock.advance(1.0)
    assert engine.human_replied(key, "bob")  # a colleague answers in the channel
    await clock.advance(5.0)
    await turns.wait_idle()

    assert delivered == []
    conversation = services.store.find_conversation(key)
    assert conversation is not None
    assert services.store.history(conversation.id) == [
        Turn(Role.USER, "anyone know how to export a PDF?")
    ]
    assert not engine.human_replied(key, "bob")


# Resolved threads -----------------------------------------------------------------------------


def test_no_replies_after_the_customer_resolves_until_a_new_question(chat: Chat) -> None:
    answer = chat.say("How do I export a note as a PDF?")
    assert source_ids(answer) == ["export-pdf"]

    resolved = chat.say("Thanks, that solved it!")
    assert resolved["kind"] == "smalltalk"
    assert resolved["text"] == INFORMAL["resolved"]
    assert chat.status() == "closed"

    assert chat.send("thanks again!") == []
    assert chat.send("👍") == []
    assert chat.send("that solved it") == []

    again = chat.say("How do I reset my password?")
    assert source_ids(again) == ["reset-password"]
    assert chat.status() == "open"
    assert chat.history()[-1] == Turn(Role.BOT, again["text"])


def test_a_check_mark_reaction_resolves_the_thread(chat: Chat, services: Services) -> None:
    chat.say("How do I export a note as a PDF?")

    assert services.engine.mark_resolved(chat.key)
    assert not services.engine.mark_resolved(chat.key)  # already resolved
    assert not services.engine.mark_resolved(ConversationKey("web", "", "never-seen"))

    assert chat.send("ok, great") == []
    assert chat.say("what about markdown?")["kind"] in ("answer", "clarify")


# Repeated questions ---------------------------------------------------------------------------


def test_a_repeated_question_never_gets_the_same_answer_twice(chat: Chat) -> None:
    first = chat.say("How do I reset my password?")
    second = chat.say("How do I reset my password?")
    third = chat.say("how do i reset my password??")

    assert first["kind"] == "answer" and source_ids(first) == ["reset-password"]
    # Asked again: other close topics and a person, not the same answer.
    assert second["kind"] == "clarify"
    assert "already shared" in second["text"]
    assert "reset-password" not in source_ids(second)
    assert "handoff" in action_kinds(second)
    # And again: a person, plainly.
    assert third["kind"] == "fallback"
    assert third["text"] == INFORMAL["offer_person"]
    assert len({first["text"], second["text"], third["text"]}) == 3
    assert chat.owner() is Owner.BOT


# Politeness -----------------------------------------------------------------------------------


def test_the_bot_apologises_once_when_falling_back(chat: Chat) -> None:
    first = chat.say("What's the weather in Paris tomorrow?")
    second = chat.say("Give me a lasagna recipe")

    assert first["kind"] == second["kind"] == "fallback"
    assert first["text"].startswith("Sorry")
    assert "sorry" not in second["text"].lower()
    assert second["text"] == INFORMAL["offer_person"]
    assert "handoff" in action_kinds(second)


def test_a_formal_channel_speaks_formally_and_signs_off(
    client: TestClient, services: Services
) -> None:
    chat = Chat(client, services, channel="formal-desk")

    hello = chat.say("hello")
    bye = chat.say("bye")

    assert hello["text"] == "Hello, I am Lumen Assistant. How may I help you?"
    assert bye["text"].endswith("\n\nThe Lumen support team")


# Abuse ----------------------------------------------------------------------------------------


def test_abuse_gets_a_calm_reply_then_a_person(chat: Chat, sink: RecordingSink) -> None:
    calm = chat.say("you stupid bot")
    assert calm["kind"] == "smalltalk"
    assert calm["text"] == INFORMAL["abuse"]
    assert "handoff" in action_kinds(calm)
    assert chat.owner() is Owner.BOT

    handoff = chat.say("how do I sync my notes, idiot")

    request = assert_handed_over(chat, handoff, sink, "abuse")
    assert request.reason == "abuse:2"
    assert_silent_now(chat)


# Escalation triggers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["I'd like to talk to a person", "can I speak to a human?", "real person please"]
)
def test_asking_for_a_person_hands_over(
    client: TestClient, services: Services, sink: RecordingSink, text: str
) -> None:
    chat = Chat(client, services)
    tried = chat.say("My invoices show the wrong company name")
    handoffs_before = services.store.counts()["handoff"]

    reply = chat.say(text)

    request = assert_handed_over(chat, reply, sink, "customer_request")
    assert request.question == "My invoices show the wrong company name"
    assert [(a.text, a.kind.value) for a in request.attempts] == [(tried["text"], tried["kind"])]
    assert services.store.counts()["handoff"] == handoffs_before + 1
    assert_silent_now(chat)


def test_saying_yes_to_the_offer_hands_over(chat: Chat, sink: RecordingSink) -> None:
    chat.say("What's the weather in Paris tomorrow?")

    reply = chat.say("yes please")

    request = assert_handed_over(chat, reply, sink, "customer_request")
    assert request.reason == "customer_request:accepted offer"
    assert request.question == "What's the weather in Paris tomorrow?"


def test_repeated_misses_hand_over_where_configured(
    client: TestClient, services: Services, sink: RecordingSink
) -> None:
    chat = Chat(client, services, channel="strict-desk")  # handoff_on_misses: perform

    first = chat.say("What's the weather in Paris tomorrow?")
    second = chat.say("Give me a lasagna recipe")

    assert first["kind"] == "fallback"
    request = assert_handed_over(chat, second, sink, "repeated_misses")
    assert request.question == "Give me a lasagna recipe"
    assert [a.kind for a in request.attempts] == [ReplyKind.FALLBACK]
    assert request.attempts[0].text == first["text"]
    assert_silent_now(chat)


def test_thumbs_down_then_the_same_question_hands_over(chat: Chat, sink: RecordingSink) -> None:
    answer = chat.say("How do I export a note as a PDF?")
    chat.rate_down(answer)

    reply = chat.say("How do I export a note as a PDF?")

    request = assert_handed_over(chat, reply, sink, "thumbs_down_repeat")
    assert [a.kind for a in request.attempts] == [ReplyKind.ANSWER]
    assert request.attempts[0].sources[0].id == "export-pdf"
    assert request.transcript[0] == Turn(Role.USER, "How do I export a note as a PDF?")


def test_negative_sentiment_without_an_answer_hands_over(chat: Chat, sink: RecordingSink) -> None:
    reply = chat.say("This is useless, I am so angry, nothing works and I lost everything!!!")

    request = assert_handed_over(chat, reply, sink, "negative_sentiment")
    assert request.sentiment <= -0.6


def test_negative_sentiment_with_a_good_answer_gets_the_answer(chat: Chat) -> None:
    reply = chat.say("I'm furious, how do I restore a deleted note?")

    assert reply["kind"] == "answer"
    assert source_ids(reply) == ["restore-deleted-notes"]
    assert chat.owner() is Owner.BOT


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I was charged twice for Plus this month", "topic:billing_dispute"),
        ("My lawyer will be in touch about my data", "topic:legal"),
    ],
)
def test_escalation_topics_hand_over(
    client: TestClient, services: Services, sink: RecordingSink, text: str, reason: str
) -> None:
    chat = Chat(client, services)

    reply = chat.say(text)

    request = assert_handed_over(chat, reply, sink, reason.split(":")[0])
    assert request.reason == reason
    assert request.question == text
    assert request.attempts == ()


def test_a_failing_sink_does_not_undo_the_handoff(
    chat: Chat, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(handoff: HandoffRequest) -> None:
        raise RuntimeError("helpdesk down")

    monkeypatch.setattr(sink, "request", broken)

    reply = chat.say("I want to talk to a human")

    assert reply["kind"] == "handoff"
    assert chat.owner() is Owner.HUMAN


# The engine's turn API ------------------------------------------------------------------------


def test_handle_burst_rejects_mixed_turns(services: Services) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        services.engine.handle_burst([])
    with pytest.raises(ValueError, match="one conversation and one author"):
        services.engine.handle_burst([web_message("a", "x"), web_message("a", "y", user="bob")])


def test_a_burst_replayed_is_not_answered_twice(services: Services) -> None:
    channel = f"replay-{uuid.uuid4().hex[:8]}"
    burst = [web_message(channel, "hello"), web_message(channel, "How do I export a PDF?")]

    first = services.engine.handle_burst(burst)
    again = services.engine.handle_burst(burst)

    assert [r.kind for r in first] == [ReplyKind.ANSWER]
    assert again == []
