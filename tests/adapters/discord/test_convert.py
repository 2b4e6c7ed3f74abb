"""Deciding what to answer, where, and in which conversation (pure functions)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from adapters.discord.convert import (
    DM_WORKSPACE,
    MessageFacts,
    Place,
    Placement,
    ReactionFacts,
    Routing,
    Why,
    button_feedback,
    button_message,
    content_missing,
    conversation_key,
    feedback_value,
    from_bot,
    placement,
    reaction_feedback,
    strip_mentions,
    to_agent_reply,
    to_inbound,
    why_answer,
)
from bot.model import ConversationKey, FeedbackValue

ME, ROLE, GUILD, SUPPORT, GENERAL, FORUM, AGENTS, USER = 1, 2, 10, 20, 21, 22, 23, 99
ROUTING = Routing(frozenset({SUPPORT}), frozenset({FORUM}), AGENTS)


def facts(**changes: object) -> MessageFacts:
    base = MessageFacts(
        message_id=500,
        channel_id=GENERAL,
        guild_id=GUILD,
        parent_id=None,
        place=Place.CHANNEL,
        author_id=USER,
        author_name="Ada",
        author_is_bot=False,
        content="How do I export?",
        mentions_me=False,
        sent_at=datetime(2025, 1, 1, tzinfo=UTC),
        me_id=ME,
        my_role_id=ROLE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "takes_part", "expected"),
    [
        (facts(place=Place.DM, guild_id=None, channel_id=7), False, Why.DM),
        (facts(mentions_me=True), False, Why.MENTION),
        (facts(), False, None),
        (facts(channel_id=SUPPORT), False, Why.SUPPORT_CHANNEL),
        # A forum post's opening message has the post's (thread's) id.
        (
            facts(place=Place.THREAD, channel_id=600, message_id=600, parent_id=FORUM),
            False,
            Why.FORUM_POST,
        ),
        # Later messages in a post are answered only where the bot takes part.
        (facts(place=Place.THREAD, channel_id=600, parent_id=FORUM), False, None),
        (facts(place=Place.THREAD, channel_id=600, parent_id=FORUM), True, Why.THREAD),
        (facts(place=Place.THREAD, channel_id=601, parent_id=GENERAL), True, Why.THREAD),
        (facts(place=Place.THREAD, channel_id=601, parent_id=GENERAL), False, None),
        (
            facts(place=Place.THREAD, channel_id=601, parent_id=GENERAL, mentions_me=True),
            False,
            Why.MENTION,
        ),
        # A thread in a support channel the bot is not part of is someone else's talk.
        (facts(place=Place.THREAD, channel_id=602, parent_id=SUPPORT), False, None),
        # Agents' channel and its threads are never customer questions.
        (facts(channel_id=AGENTS, mentions_me=True), False, None),
        (facts(place=Place.THREAD, channel_id=603, parent_id=AGENTS, mentions_me=True), True, None),
        # System messages (pins, joins, thread notices) are not questions.
        (facts(channel_id=SUPPORT, user_message=False), False, None),
    ],
)
def test_why_answer(message: MessageFacts, takes_part: bool, expected: Why | None) -> None:
    assert why_answer(message, ROUTING, takes_part) == expected


def test_bots_are_recognised() -> None:
    assert from_bot(USER, True, ME)
    assert from_bot(ME, False, ME)
    assert not from_bot(USER, False, ME)
    assert not from_bot(USER, False, None)


def test_conversation_keys() -> None:
    dm = facts(place=Place.DM, guild_id=None, channel_id=7)
    assert conversation_key(dm) == ConversationKey("discord", DM_WORKSPACE, "7")
    # A question in a channel: keyed by its own id, the id of the thread started from it.
    assert conversation_key(facts()) == ConversationKey("discord", "10", "21", "500")
    thread = facts(place=Place.THREAD, channel_id=500, message_id=777, parent_id=GENERAL)
    assert conversation_key(thread) == ConversationKey("discord", "10", "21", "500")


def test_placement() -> None:
    assert placement(facts(), ROUTING) is Placement.NEW_THREAD
    assert placement(facts(), replace(ROUTING, threads=False)) is Placement.REPLY
    assert placement(facts(place=Place.OTHER), ROUTING) is Placement.REPLY
    assert placement(facts(place=Place.THREAD), ROUTING) is Placement.SAME_CHANNEL
    assert placement(facts(place=Place.DM), ROUTING) is Placement.SAME_CHANNEL


def test_mentions_of_the_bot_and_its_role_are_stripped() -> None:
    assert strip_mentions("<@1> how do I <@!1> export", ME) == "how do I export"
    assert strip_mentions("<@&2> help <@3>", ME, ROLE) == "help <@3>"


def test_inbound_message() -> None:
    message = to_inbound(facts(content="<@1> How do I export?", mentions_me=True), Why.MENTION)
    assert message.text == "How do I export?"
    assert message.conversation == ConversationKey("discord", "10", "21", "500")
    assert (message.message_id, message.user, message.revision) == ("500", "99", "")
    assert message.raw["why"] == "mention"
    edit = to_inbound(facts(), Why.SUPPORT_CHANNEL, revision="2025-01-01T00:00:05+00:00")
    assert edit.revision == "2025-01-01T00:00:05+00:00"


def test_content_missing_only_without_text_and_attachments() -> None:
    assert content_missing(facts(content=""))
    assert not content_missing(facts(content="", has_attachments=True))
    assert not content_missing(facts())


@pytest.mark.parametrize(
    ("emoji_id", "name", "expected"),
    [
        (None, "👍", FeedbackValue.UP),
        (None, "👍🏿", FeedbackValue.UP),
        (None, "👎", FeedbackValue.DOWN),
        (None, "🎉", None),
        (123456789012345678, "thumbs", FeedbackValue.UP),
        (999, "thumbs", None),
        (None, None, None),
    ],
)
def test_feedback_value(emoji_id: int | None, name: str | None, expected: object) -> None:
    assert feedback_value(emoji_id, name, ("👍", "123456789012345678"), ("👎",)) == expected


def test_reaction_feedback_add_and_withdraw() -> None:
    added = ReactionFacts(1, 2, GUILD, USER, False, None, "👍", True)
    event = reaction_feedback(added, "r1", FeedbackValue.UP, nonce="n1")
    assert (event.reply_id, event.user, event.value) == ("r1", "99", FeedbackValue.UP)
    removed = reaction_feedback(replace(added, added=False), "r1", FeedbackValue.UP, nonce="n2")
    assert removed.value is None
    assert removed.event_id != event.event_id


def test_buttons() -> None:
    up = button_feedback(True, "r1", USER, 42)
    assert (up.value, up.event_id) == (FeedbackValue.UP, "interaction:42")
    assert button_feedback(False, "r1", USER, 43).value is FeedbackValue.DOWN
    key = ConversationKey("discord", "10", "21", "500")
    message = button_message(key, USER, 44, "I'd like to talk to a person")
    assert message.conversation == key and message.message_id == "interaction:44"


def test_agent_reply() -> None:
    key = ConversationKey("discord", "@me", "7")
    reply = to_agent_reply(facts(place=Place.THREAD, channel_id=800, parent_id=AGENTS), key)
    assert (reply.card_ref, reply.user, reply.text, reply.conversation) == (
        f"{AGENTS}:800",
        "99",
        "How do I export?",
        key,
    )
