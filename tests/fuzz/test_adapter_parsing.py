"""Every adapter's pure parsing under hostile input: it returns a value of the shared model or
says "not for me" (None), or refuses with its documented error; nothing else escapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.discord import convert as discord_convert
from adapters.rasa import convert as rasa_convert
from adapters.slack import convert as slack_convert
from adapters.web.convert import to_feedback, to_message
from adapters.web.payloads import ChatRequest, FeedbackRequest
from adapters.zendesk import convert as zendesk_convert
from bot.model import FeedbackEvent, InboundMessage
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import json_bytes, json_values, junk_bytes, mutated, odd_text

# Slack -----------------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", None]
)


@FUZZ
@given(raw=st.one_of(junk_bytes, json_values().map(json_bytes)), content_type=CONTENT_TYPES)
def test_slack_parse_body_returns_a_well_formed_object_or_none(
    raw: bytes, content_type: str | None
) -> None:
    parsed = slack_convert.parse_body(raw, content_type)
    assert parsed is None or (isinstance(parsed, dict) and slack_convert.well_formed(parsed))


def test_slack_parse_body_refuses_deep_nesting() -> None:
    from tests.fuzz.strategies import deep_json

    assert slack_convert.parse_body(deep_json(10_000), "application/json") is None
    form = b"payload=" + deep_json(10_000, kind="object")
    assert slack_convert.parse_body(form, "application/x-www-form-urlencoded") is None


SLACK_EVENT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["message", "app_mention"]),
        "channel": odd_text(30),
        "ts": st.one_of(odd_text(20), st.sampled_from(["1700000000.000100", "1e400", "-1", "nan"])),
        "user": odd_text(20),
        "text": odd_text(500),
    },
    optional={"thread_ts": odd_text(20), "channel_type": st.sampled_from(["im", "channel", ""])},
)


@FUZZ
@given(event=SLACK_EVENT, team=odd_text(15), bot=st.one_of(st.none(), odd_text(10)))
def test_slack_messages_with_odd_fields_become_inbound_messages(
    event: dict[str, Any], team: str, bot: str | None
) -> None:
    slack_convert.route_message(
        event,  # type: ignore[arg-type]
        bot_user_id=bot,
        auto_answer=["C0AUTO"],
        agents_channel="C0AGENTS",
    )
    message = slack_convert.message_to_inbound(event, team, bot_user_id=bot)  # type: ignore[arg-type]
    assert isinstance(message, InboundMessage)
    assert isinstance(message.text, str)
    assert message.sent_at.tzinfo is not None


@FUZZ
@given(reaction=odd_text(40), item=json_values(6))
def test_slack_reactions_with_odd_fields(reaction: str, item: Any) -> None:
    assert slack_convert.reaction_value(reaction, ["+1"], ["-1"]) in (
        None,
        *list(slack_convert.FeedbackValue),
    )
    if isinstance(item, dict):
        event = {"type": "reaction_added", "reaction": reaction, "item": item, "user": "U1"}
        ref = slack_convert.reaction_ref(event)  # type: ignore[arg-type]
        assert ref is None or isinstance(ref, str)


BUTTON = st.fixed_dictionaries(
    {
        "action_id": st.one_of(
            st.sampled_from(["feedback_up", "feedback_down", "feedback_reason_wrong_answer"]),
            odd_text(30),
        ),
        "value": odd_text(80),
        # Slack always sends it; a payload without it is caught at the adapter's boundary
        # (`SlackAdapter._on_error`: logged, acknowledged), which test_http covers.
        "action_ts": odd_text(20),
    }
)
BLOCK_ACTIONS = st.fixed_dictionaries(
    {
        "type": st.just("block_actions"),
        "user": st.fixed_dictionaries({"id": odd_text(20)}, optional={"team_id": odd_text(10)}),
        "container": st.fixed_dictionaries(
            {}, optional={"channel_id": odd_text(10), "message_ts": odd_text(20)}
        ),
        "actions": st.lists(BUTTON, min_size=1, max_size=2),
    },
    optional={"team": st.fixed_dictionaries({"id": odd_text(10)}), "trigger_id": odd_text(20)},
)


@FUZZ
@given(payload=BLOCK_ACTIONS, label=odd_text(60))
def test_slack_button_clicks_with_odd_fields(payload: dict[str, Any], label: str) -> None:
    action = payload["actions"][0]
    for result in (
        slack_convert.button_feedback(payload, action),  # type: ignore[arg-type]
        slack_convert.reason_feedback(payload, action),  # type: ignore[arg-type]
    ):
        assert result is None or isinstance(result, FeedbackEvent)
    message = slack_convert.action_message(payload, action, label)  # type: ignore[arg-type]
    assert message is None or isinstance(message, InboundMessage)


# Discord ---------------------------------------------------------------------------------------

IDS = st.integers(min_value=0, max_value=2**64 - 1)
ROUTING = discord_convert.Routing(frozenset({20}), frozenset({22}), 23)


@FUZZ
@given(
    message_id=IDS,
    channel_id=IDS,
    guild_id=st.one_of(st.none(), IDS),
    parent_id=st.one_of(st.none(), IDS),
    place=st.sampled_from(list(discord_convert.Place)),
    content=odd_text(2000),
    mentions_me=st.booleans(),
    edited=st.booleans(),
    takes_part=st.booleans(),
)
def test_discord_messages_with_odd_content(
    message_id: int,
    channel_id: int,
    guild_id: int | None,
    parent_id: int | None,
    place: discord_convert.Place,
    content: str,
    mentions_me: bool,
    edited: bool,
    takes_part: bool,
) -> None:
    facts = discord_convert.MessageFacts(
        message_id=message_id,
        channel_id=channel_id,
        guild_id=guild_id,
        parent_id=parent_id,
        place=place,
        author_id=99,
        author_name="\u202emallory",
        author_is_bot=False,
        content=content,
        mentions_me=mentions_me,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        edited_at=datetime(2026, 1, 2, tzinfo=UTC) if edited else None,
        me_id=1,
        my_role_id=2,
    )
    discord_convert.content_missing(facts)
    discord_convert.is_agents_traffic(facts, ROUTING)
    discord_convert.placement(facts, ROUTING)
    key = discord_convert.conversation_key(facts)
    why = discord_convert.why_answer(facts, ROUTING, takes_part)
    if why is not None:
        message = discord_convert.to_inbound(facts, why)
        assert isinstance(message.text, str)
    assert isinstance(discord_convert.to_agent_reply(facts, key).text, str)
    assert isinstance(discord_convert.strip_mentions(content, 1, 2), str)


@FUZZ
@given(
    emoji_id=st.one_of(st.none(), IDS),
    emoji_name=st.one_of(st.none(), odd_text(20)),
    reply_id=odd_text(64),
    interaction=IDS,
    text=odd_text(200),
)
def test_discord_reactions_and_buttons_with_odd_fields(
    emoji_id: int | None, emoji_name: str | None, reply_id: str, interaction: int, text: str
) -> None:
    value = discord_convert.feedback_value(emoji_id, emoji_name, ["👍"], ["👎"])
    facts = discord_convert.ReactionFacts(
        message_id=1,
        channel_id=2,
        guild_id=None,
        user_id=3,
        user_is_bot=False,
        emoji_id=emoji_id,
        emoji_name=emoji_name,
        added=True,
    )
    if value is not None:
        event = discord_convert.reaction_feedback(facts, reply_id, value, "n")
        assert event.reply_id == reply_id
    assert discord_convert.button_feedback(True, reply_id, 3, interaction).reply_id == reply_id
    key = discord_convert.conversation_key(
        discord_convert.MessageFacts(
            message_id=1,
            channel_id=2,
            guild_id=None,
            parent_id=None,
            place=discord_convert.Place.DM,
            author_id=3,
            author_name="x",
            author_is_bot=False,
            content="",
            mentions_me=False,
        )
    )
    assert discord_convert.button_message(key, 3, interaction, text).text == text


# Zendesk ---------------------------------------------------------------------------------------


def _zendesk_payloads() -> list[dict[str, Any]]:
    from tests.adapters.zendesk.conftest import payload

    return [payload(name) for name in ("comment_added_customer", "ticket_created")]


@FUZZ
@given(data=st.data())
def test_zendesk_parse_event_returns_a_comment_none_or_malformed(data: Any) -> None:
    body = data.draw(
        st.one_of(json_values(), mutated(data.draw(st.sampled_from(_zendesk_payloads()))))
    )
    try:
        comment = zendesk_convert.parse_event(body)
    except zendesk_convert.MalformedEvent:
        return
    if comment is not None:
        zendesk_convert.route(comment, bot_user_id=1, handoff_keywords=["agent"])
        assert isinstance(zendesk_convert.to_inbound(comment, "acme").text, str)


# Rasa ------------------------------------------------------------------------------------------


@FUZZ
@given(
    sender=odd_text(40),
    latest=st.one_of(
        st.none(),
        json_values(),
        st.dictionaries(
            st.sampled_from(["text", "intent", "entities", "message_id"]), json_values(5)
        ),
    ),
    events=st.lists(
        st.one_of(
            json_values(4),
            st.dictionaries(
                st.sampled_from(["event", "text", "timestamp", "input_channel"]), json_values(3)
            ),
        ),
        max_size=4,
    ),
    slots=st.dictionaries(
        st.sampled_from(["supportbot_feedback", "supportbot_feedback_reason", "x"]), json_values(3)
    ),
)
def test_rasa_tracker_conversion_with_odd_trackers(
    sender: str, latest: Any, events: list[Any], slots: dict[str, Any]
) -> None:
    message = rasa_convert.inbound_from_tracker(sender, latest, events)
    assert message is None or isinstance(message.text, str)
    value, _reason = rasa_convert.feedback_from(latest, slots)
    assert value is None or isinstance(value, rasa_convert.FeedbackValue)


# Web chat --------------------------------------------------------------------------------------


@FUZZ
@given(body=json_values())
def test_web_payloads_validate_or_refuse(body: Any) -> None:
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError:
        pass
    else:
        assert isinstance(to_message(request), InboundMessage)
    try:
        feedback = FeedbackRequest.model_validate(body)
    except ValidationError:
        pass
    else:
        assert isinstance(to_feedback(feedback), FeedbackEvent)


@pytest.mark.parametrize("text", ["\x00", "\ud800", "a" * 20_001])
def test_web_chat_request_edges(text: str) -> None:
    body = {"conversation_id": "c", "user": "u", "text": text}
    if len(text) > 20_000 or "\ud800" in text:
        with pytest.raises(ValidationError):
            ChatRequest.model_validate(body)
    else:
        assert to_message(ChatRequest.model_validate(body)).text == text
