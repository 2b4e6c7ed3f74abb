"""Pure conversions between Rasa's tracker state and the shared model."""

from __future__ import annotations

import json

from adapters.rasa.convert import (
    feedback_from,
    inbound_from_tracker,
    message_key,
    reply_message,
)
from bot.model import FeedbackReason, FeedbackValue, Reply, Source

EVENTS = [
    {"event": "action", "name": "action_listen", "timestamp": 1.0},
    {"event": "user", "text": "hi there", "timestamp": 2.0, "input_channel": "socketio"},
]


def test_the_latest_message_becomes_an_inbound_message() -> None:
    latest = {"text": "How do I reset my password?", "message_id": "m1"}
    message = inbound_from_tracker("s1", latest, EVENTS)
    assert message is not None
    assert (message.platform, message.workspace, message.channel, message.user) == (
        "rasa",
        "socketio",
        "s1",
        "s1",
    )
    assert message.message_id == "m1" and message.text == "How do I reset my password?"
    handoff = inbound_from_tracker("s1", latest, EVENTS, text="a person", suffix=":handoff")
    assert handoff is not None and (handoff.text, handoff.message_id) == ("a person", "m1:handoff")


def test_no_text_no_message() -> None:
    assert inbound_from_tracker("s1", {}, EVENTS) is None
    assert inbound_from_tracker("s1", {"text": "   "}, EVENTS) is None
    assert inbound_from_tracker("s1", None, []) is None


def test_without_a_message_id_the_key_is_stable_per_message() -> None:
    latest = {"text": "hi there"}
    assert message_key("s1", latest, EVENTS) == message_key("s1", latest, EVENTS)
    later = [*EVENTS, {"event": "user", "text": "hi there", "timestamp": 3.0}]
    assert message_key("s1", latest, later) != message_key("s1", latest, EVENTS)
    assert message_key("s2", latest, EVENTS) != message_key("s1", latest, EVENTS)


def test_feedback_comes_from_entities_slots_or_intents() -> None:
    entity = {"entities": [{"entity": "supportbot_feedback", "value": "down"}]}
    assert feedback_from(entity, {}) == (FeedbackValue.DOWN, None)
    assert feedback_from({}, {"supportbot_feedback": "👍"}) == (FeedbackValue.UP, None)
    assert feedback_from({"intent": {"name": "feedback_up"}}, {}) == (FeedbackValue.UP, None)
    reason = {"entities": [{"entity": "supportbot_feedback_reason", "value": "outdated"}]}
    assert feedback_from(reason, {}) == (FeedbackValue.DOWN, FeedbackReason.OUTDATED)
    assert feedback_from({"intent": {"name": "greet"}}, {}) == (None, None)
    assert feedback_from({}, {"supportbot_feedback_reason": "bogus"}) == (None, None)


def test_an_answer_carries_its_sources_and_feedback_buttons() -> None:
    source = Source("reset-password", 0.91, "Reset your password", "https://help.example/reset")
    reply = Reply.answer("Click Forgot password?", (source,), 0.8)
    message = reply_message(reply)
    assert message["text"] == (
        "Click Forgot password?\nSources: Reset your password <https://help.example/reset>"
    )
    assert message["custom"]["supportbot"]["sources"][0]["id"] == "reset-password"
    payloads = {b["title"]: b["payload"] for b in message["buttons"]}
    assert json.loads(payloads["👍"].removeprefix("/feedback")) == {"supportbot_feedback": "up"}
    assert payloads["Talk to a person"] == "/request_human"


def test_choices_become_buttons_that_ask_the_topic() -> None:
    options = (Source("a", 0.5, "Plan prices"), Source("b", 0.4, "Upgrade your plan"))
    message = reply_message(Reply.clarify("Which one?", options, 0.3))
    assert [(b["title"], b["payload"]) for b in message["buttons"]] == [
        ("Plan prices", "Plan prices"),
        ("Upgrade your plan", "Upgrade your plan"),
    ]
    assert "Sources" not in message["text"]


def test_quick_reasons_are_buttons_with_the_reason_entity() -> None:
    message = reply_message(Reply.feedback_reasons("r1"))
    payloads = [json.loads(b["payload"].removeprefix("/feedback")) for b in message["buttons"]]
    assert {"supportbot_feedback": "down", "supportbot_feedback_reason": "talk_to_person"} in (
        payloads
    )
