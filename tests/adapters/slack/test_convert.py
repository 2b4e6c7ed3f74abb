"""Slack payloads → the shared model, and what the bot answers (pure functions)."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import urlencode

import pytest

from adapters.slack import convert
from adapters.slack.convert import Route
from adapters.slack.payloads import (
    BlockActionsPayload,
    MessageChangedEvent,
    MessageEvent,
    ReactionEvent,
)
from bot.model import FeedbackValue
from tests.adapters.slack.conftest import PAYLOADS, payload

BOT = "U0BOT"
ROUTING: dict[str, Any] = {
    "bot_user_id": BOT,
    "auto_answer": {"C0AUTO"},
    "agents_channel": "C0AGENTS",
}


@pytest.mark.parametrize("path", sorted(PAYLOADS.glob("*.json")), ids=lambda p: p.stem)
def test_every_recorded_payload_parses_as_slack_sends_it(path: Any) -> None:
    raw = path.read_bytes()
    body = json.loads(raw)
    if body.get("type") == "block_actions":
        form = urlencode({"payload": raw.decode()}).encode()
        assert convert.parse_body(form, "application/x-www-form-urlencoded") == body
    else:
        assert convert.parse_body(raw, "application/json") == body


def _message(**fields: Any) -> MessageEvent:
    event: dict[str, Any] = {
        "type": "message",
        "channel": "C0GENERAL",
        "channel_type": "channel",
        "user": "U0CUST",
        "text": "hello",
        "ts": "1700000000.000100",
    }
    event.update(fields)
    return cast(MessageEvent, event)


@pytest.mark.parametrize(
    ("fields", "route"),
    [
        ({"channel": "D0DM", "channel_type": "im"}, Route.ANSWER),
        ({"channel": "D0DM", "channel_type": "im", "text": "<@U0BOT> hi"}, Route.ANSWER),
        ({"text": "<@U0BOT> help"}, Route.MENTION),
        ({"text": "<@U0BOT|supportbot> help", "thread_ts": "1.0"}, Route.MENTION),
        ({"thread_ts": "1699999999.000100"}, Route.IF_IN_THREAD),
        ({"thread_ts": "1700000000.000100"}, Route.IGNORE),  # a thread parent is top-level
        ({"channel": "C0AUTO"}, Route.ANSWER),
        ({"channel": "C0AUTO", "thread_ts": "1.0"}, Route.IF_IN_THREAD),
        ({}, Route.IGNORE),
        ({"text": "<@U0OTHER> help"}, Route.IGNORE),
        ({"channel": "C0AGENTS", "thread_ts": "1.0"}, Route.AGENT_REPLY),
        ({"channel": "C0AGENTS"}, Route.IGNORE),
        ({"channel": "C0AGENTS", "text": "<@U0BOT> hi"}, Route.IGNORE),
    ],
)
def test_route_message(fields: dict[str, Any], route: Route) -> None:
    assert convert.route_message(_message(**fields), **ROUTING) is route


def _edit(text: str, previous: str = "before", **fields: Any) -> MessageChangedEvent:
    event = payload("message_changed")["event"]
    event["message"]["text"] = text
    event["previous_message"]["text"] = previous
    event.update(fields)
    return cast(MessageChangedEvent, event)


def test_route_edit() -> None:
    assert convert.route_edit(_edit("new"), **ROUTING) is Route.ANSWER  # a DM
    in_channel = {"channel": "C0GENERAL", "channel_type": "channel"}
    assert convert.route_edit(_edit("<@U0BOT> new", **in_channel), **ROUTING) is Route.ANSWER
    assert convert.route_edit(_edit("new", **in_channel), **ROUTING) is Route.IGNORE
    assert convert.route_edit(_edit("same", "same"), **ROUTING) is Route.IGNORE
    unmarked = _edit("new")
    del unmarked["message"]["edited"]
    assert convert.route_edit(unmarked, **ROUTING) is Route.IGNORE


@pytest.mark.parametrize(
    ("event", "dropped"),
    [
        (_message(), False),
        (_message(subtype="file_share"), False),
        (_message(subtype="thread_broadcast"), False),
        (_message(user=BOT), True),
        (_message(bot_id="B0OTHER"), True),
        (_message(subtype="bot_message"), True),
        (_message(subtype="channel_join"), True),
        (_message(subtype="message_deleted"), True),
        (_message(user=None), True),
        ({"type": "message", "subtype": "message_changed", "message": {"user": "U1"}}, False),
        ({"type": "message", "subtype": "message_changed", "message": {"bot_id": "B1"}}, True),
        ({"type": "message", "subtype": "message_changed"}, True),
        ({"type": "app_mention", "user": "U1", "bot_id": "B1"}, True),
        ({"type": "reaction_added", "user": BOT}, False),  # bolt drops the bot's own
    ],
)
def test_bot_traffic(event: dict[str, Any], dropped: bool) -> None:
    event = {k: v for k, v in event.items() if v is not None}
    assert convert.is_bot_traffic(event, BOT) is dropped


def test_plain_text_unescapes_and_drops_the_bots_mention() -> None:
    text = (
        "<@U0BOT> can <@U0ANA|ana> read <https://x.example/a?b=1&amp;c=2|the guide> "
        "in <#C1|help>? &lt;3 <!here>"
    )
    assert convert.to_plain_text(text, BOT) == ("can @ana read the guide in #help? <3 @here")
    assert convert.to_plain_text("see <https://x.example>", BOT) == "see https://x.example"


def test_a_mention_becomes_a_message_in_its_thread() -> None:
    message = convert.message_to_inbound(payload("app_mention")["event"], "T1", bot_user_id=BOT)
    assert message.message_id == "C0GENERAL:1700000100.000200"
    assert message.thread == "1700000100.000200"
    assert message.text == "How do I reset my password?"
    assert message.user == "U0CUST"
    assert message.revision == ""


def test_a_dm_is_one_conversation_unless_written_in_a_thread() -> None:
    event = payload("message_im")["event"]
    assert convert.message_to_inbound(event, "T1", bot_user_id=BOT).thread == ""
    event["thread_ts"] = "1700000000.000001"
    assert convert.message_to_inbound(event, "T1", bot_user_id=BOT).thread == "1700000000.000001"


def test_an_edit_keeps_the_message_id_and_carries_the_revision() -> None:
    edit = convert.edit_to_inbound(payload("message_changed")["event"], "T1", bot_user_id=BOT)
    assert edit.message_id == "D0DM:1700000200.000300"
    assert edit.revision == "1700000260.000000"
    assert edit.text == "How do I sign up?"
    assert edit.thread == ""


@pytest.mark.parametrize(
    ("reaction", "value"),
    [
        ("+1", FeedbackValue.UP),
        ("thumbsup", FeedbackValue.UP),
        ("+1::skin-tone-4", FeedbackValue.UP),
        ("-1", FeedbackValue.DOWN),
        ("thumbsdown", FeedbackValue.DOWN),
        ("heart", None),
    ],
)
def test_reaction_values(reaction: str, value: FeedbackValue | None) -> None:
    assert convert.reaction_value(reaction, {"+1", "thumbsup"}, {"-1", "thumbsdown"}) == value


def test_reactions_become_feedback_and_removal_withdraws() -> None:
    added = cast(ReactionEvent, payload("reaction_added")["event"])
    removed = cast(ReactionEvent, payload("reaction_removed")["event"])
    kwargs: dict[str, Any] = {"reply_id": "r1", "team": "T1", "up": {"+1"}, "down": {"-1"}}
    up = convert.reaction_feedback(added, event_id="Ev1", **kwargs)
    assert up is not None and up.value is FeedbackValue.UP and up.reply_id == "r1"
    assert up.event_id == "T1:Ev1" and up.user == "U0CUST"
    gone = convert.reaction_feedback(removed, event_id="Ev2", **kwargs)
    assert gone is not None and gone.value is None
    assert convert.reaction_ref(added) == "C0GENERAL:1700000001.000100"
    assert convert.reaction_ref(cast(ReactionEvent, {**added, "item": {"type": "file"}})) is None


def test_a_button_click_is_feedback_and_a_repeat_is_a_new_event() -> None:
    body = cast(BlockActionsPayload, payload("block_actions"))
    first = convert.button_feedback(body, body["actions"][0])
    assert first is not None and first.value is FeedbackValue.UP and first.reply_id == "REPLY_ID"
    again = dict(body["actions"][0], action_ts="1700000799.000001")
    second = convert.button_feedback(body, cast(Any, again))
    assert second is not None and second.event_id != first.event_id


def test_a_click_that_speaks_for_the_user_lands_in_the_buttons_conversation() -> None:
    body = cast(BlockActionsPayload, payload("block_actions"))
    message = convert.action_message(body, body["actions"][0], "I'd like to talk to a person")
    assert message is not None
    assert (message.channel, message.thread) == ("C0GENERAL", "1700000100.000200")
    assert message.message_id == "C0GENERAL:action:U0CUST:1700000700.001100"
    assert message.text == "I'd like to talk to a person"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", None),
        (b"   ", "application/json"),
        (b"{oops", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b"\xff", None),
        (b"token=x&command=%2Fhelp", "application/x-www-form-urlencoded"),
        (b'{"type": 3}', "application/json"),
        (b'{"type": "event_callback", "event": "text"}', "application/json"),
        (b'{"type": "event_callback", "event": {"type": "message", "text": 5}}', None),
        (b'{"type": "block_actions", "actions": [{"value": "x"}]}', None),
        (b'{"type": "block_actions", "team": 7}', None),
    ],
)
def test_malformed_bodies(body: bytes, content_type: str | None) -> None:
    assert convert.parse_body(body, content_type) is None
