"""Tests for bot.model: the frozen, platform-neutral message model."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from bot.model import (
    Action,
    ActionKind,
    ConversationKey,
    FeedbackEvent,
    FeedbackValue,
    InboundMessage,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Source,
    Turn,
    utcnow,
)


def _message(**changes: object) -> InboundMessage:
    fields: dict[str, object] = {
        "platform": "slack",
        "workspace": "T1",
        "channel": "C1",
        "user": "U1",
        "message_id": "1700000000.000100",
        "text": "How do I reset my password?",
        "thread": "1700000000.000001",
    }
    fields.update(changes)
    return InboundMessage(**fields)  # type: ignore[arg-type]


SOURCES = (
    Source("pricing-plus", 0.8, title="Plus plan pricing", url="https://help.example/plus"),
    Source("pricing-business", 0.7),
)


# --- frozen values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (_message(), "text"),
        (ConversationKey("web", "", "c1"), "channel"),
        (Reply.smalltalk("hi"), "text"),
        (Turn(Role.USER, "hi"), "text"),
        (SOURCES[0], "score"),
        (Action(ActionKind.CHOOSE, "Plus"), "value"),
        (FeedbackEvent("web", "r1", "u1", FeedbackValue.UP, "e1"), "value"),
    ],
)
def test_values_are_frozen(value: object, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, "changed")


def test_values_change_only_through_replace() -> None:
    message = _message()
    edited = dataclasses.replace(message, text="new text")
    assert edited.text == "new text" and message.text == "How do I reset my password?"


def test_raw_payload_is_a_read_only_copy() -> None:
    payload = {"ts": "1.2", "blocks": []}
    message = _message(raw=payload)
    assert isinstance(message.raw, MappingProxyType)
    assert message.raw == payload
    with pytest.raises(TypeError):
        message.raw["ts"] = "9"  # type: ignore[index]
    payload["ts"] = "changed later"
    assert message.raw["ts"] == "1.2"


def test_raw_defaults_to_an_empty_read_only_mapping() -> None:
    message = _message()
    assert dict(message.raw) == {}
    with pytest.raises(TypeError):
        message.raw["x"] = 1  # type: ignore[index]


def test_raw_does_not_take_part_in_equality_or_hashing() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    a = _message(raw={"a": 1}, sent_at=at)
    b = _message(raw={"b": 2}, sent_at=at)
    assert a == b
    assert hash(a) == hash(b)
    assert "raw" not in repr(a)


def test_sent_at_defaults_to_an_aware_now() -> None:
    before = utcnow()
    message = _message()
    assert message.sent_at.tzinfo is not None
    assert before <= message.sent_at <= utcnow() + timedelta(seconds=1)
    assert utcnow().utcoffset() == timedelta(0)


# --- conversation keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ConversationKey("slack", "T1", "C1", "1700000000.000001"),
        ConversationKey("web", "", "session-1"),
        ConversationKey("discord", "guild", "123", "thread:with:colons"),
        ConversationKey("", "", "", ""),
    ],
)
def test_conversation_key_string_round_trip(key: ConversationKey) -> None:
    text = str(key)
    assert text.count(":") >= 3
    assert ConversationKey.parse(text) == key


def test_conversation_key_string_form() -> None:
    assert str(ConversationKey("slack", "T1", "C1", "42")) == "slack:T1:C1:42"
    assert str(ConversationKey("web", "", "c1")) == "web::c1:"


@pytest.mark.parametrize("bad", ["", "slack", "slack:T1", "slack:T1:C1"])
def test_conversation_key_parse_rejects_malformed_keys(bad: str) -> None:
    with pytest.raises(ValueError, match="not a conversation key"):
        ConversationKey.parse(bad)


def test_a_message_knows_its_conversation() -> None:
    message = _message()
    assert message.conversation == ConversationKey("slack", "T1", "C1", "1700000000.000001")
    assert _message(thread="").conversation.thread == ""


def test_conversation_keys_are_hashable_values() -> None:
    keys = {ConversationKey("web", "", "c1"), ConversationKey("web", "", "c1", "")}
    assert len(keys) == 1


# --- replies ---------------------------------------------------------------------------------


def test_answer_reply_offers_feedback_and_handoff() -> None:
    reply = Reply.answer("Plus costs $8.", SOURCES[:1], confidence=0.9)
    assert reply.kind is ReplyKind.ANSWER
    assert reply.text == "Plus costs $8."
    assert reply.sources == SOURCES[:1]
    assert reply.confidence == 0.9
    assert reply.id == ""
    assert [a.kind for a in reply.actions] == [
        ActionKind.FEEDBACK_UP,
        ActionKind.FEEDBACK_DOWN,
        ActionKind.HANDOFF,
    ]


def test_clarify_reply_offers_one_choice_per_option() -> None:
    reply = Reply.clarify("Which plan?", SOURCES, confidence=0.3)
    assert reply.kind is ReplyKind.CLARIFY
    assert reply.sources == SOURCES
    assert reply.actions == (
        Action(ActionKind.CHOOSE, "Plus plan pricing", "pricing-plus"),
        Action(ActionKind.CHOOSE, "pricing-business", "pricing-business"),  # no title: the id
    )
    assert reply.confidence == 0.3


def test_fallback_reply_offers_only_a_handoff() -> None:
    reply = Reply.fallback("Sorry, I don't know.", confidence=0.1)
    assert reply.kind is ReplyKind.FALLBACK
    assert reply.sources == ()
    assert [a.kind for a in reply.actions] == [ActionKind.HANDOFF]
    assert reply.confidence == 0.1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply.handoff("A person will take over."), ReplyKind.HANDOFF),
        (Reply.smalltalk("Hi!"), ReplyKind.SMALLTALK),
    ],
)
def test_handoff_and_smalltalk_replies_are_bare(reply: Reply, kind: ReplyKind) -> None:
    assert reply.kind is kind
    assert reply.sources == () and reply.actions == ()
    assert reply.confidence is None


def test_enums_are_plain_strings() -> None:
    assert ReplyKind.ANSWER == "answer"
    assert Owner("human") is Owner.HUMAN
    assert Role("bot") is Role.BOT
    assert FeedbackValue.DOWN == "down"
    assert f"{ActionKind.CHOOSE}" == "choose"


def test_feedback_event_defaults() -> None:
    event = FeedbackEvent("web", "r1", "u1", None, "e1")
    assert event.value is None and event.reason is None
    assert event.at.tzinfo is not None
