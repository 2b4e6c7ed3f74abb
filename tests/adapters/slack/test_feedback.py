"""Feedback from Slack: thumbs reactions and buttons on the bot's answers, and the other buttons."""

from __future__ import annotations

from typing import Any

import pytest

from bot.model import ConversationKey
from tests.adapters.slack.conftest import Harness, payload
from tests.adapters.slack.emulator import TEAM


async def _answer(slack: Harness) -> tuple[str, str]:
    """Ask in a channel; returns the answer's reply id and its ts."""
    await slack.send(payload("app_mention"))
    await slack.settle()
    [post] = slack.emulator.posts()
    ts = slack.emulator.messages["C0GENERAL"][-1]["ts"]
    return post["metadata"]["event_payload"]["reply_id"], ts


def _reaction(kind: str, ts: str, *, reaction: str = "+1", event_id: str = "") -> dict[str, Any]:
    body = payload(kind)
    body["event"]["reaction"] = reaction
    body["event"]["item"]["ts"] = ts
    if event_id:
        body["event_id"] = event_id
    return body


def _click(reply_id: str, ts: str, action_id: str, action_ts: str, **extra: Any) -> dict[str, Any]:
    body = payload("block_actions")
    body["container"]["message_ts"] = body["message"]["ts"] = ts
    action = body["actions"][0]
    action.update(action_id=action_id, value=reply_id, action_ts=action_ts, **extra)
    return body


async def test_a_thumbs_up_reaction_on_an_answer_is_feedback_and_removing_it_withdraws_it(
    slack: Harness,
) -> None:
    reply_id, ts = await _answer(slack)
    response = await slack.send(_reaction("reaction_added", ts))
    await slack.settle()
    assert response.status_code == 200
    assert slack.services.store.feedback_for(reply_id) == {"up": 1, "down": 0}
    assert slack.counts()["feedback"] == 1

    # Slack delivers it again: nothing changes.
    await slack.send(_reaction("reaction_added", ts), headers={"X-Slack-Retry-Num": "1"})
    await slack.settle()
    assert slack.counts()["feedback"] == 1

    await slack.send(_reaction("reaction_removed", ts))
    await slack.settle()
    assert slack.services.store.feedback_for(reply_id) == {"up": 0, "down": 0}


@pytest.mark.parametrize("reaction", ["-1", "thumbsdown", "-1::skin-tone-3"])
async def test_thumbs_down_reactions_rate_down(slack: Harness, reaction: str) -> None:
    reply_id, ts = await _answer(slack)
    await slack.send(_reaction("reaction_added", ts, reaction=reaction))
    await slack.settle()
    assert slack.services.store.feedback_for(reply_id) == {"up": 0, "down": 1}


async def test_other_reactions_and_reactions_on_other_messages_are_ignored(
    slack: Harness,
) -> None:
    _, ts = await _answer(slack)
    await slack.send(_reaction("reaction_added", ts, reaction="tada", event_id="Ev0R1"))
    await slack.send(_reaction("reaction_added", "1600000000.000001", event_id="Ev0R2"))
    await slack.settle()
    assert slack.counts()["feedback"] == 0


async def test_thumbs_buttons_are_feedback_and_a_repeated_click_counts_once(
    slack: Harness,
) -> None:
    reply_id, ts = await _answer(slack)
    first = await slack.click(_click(reply_id, ts, "feedback_up", "1700000700.000001"))
    again = await slack.click(_click(reply_id, ts, "feedback_up", "1700000701.000001"))
    await slack.settle()
    assert (first.status_code, again.status_code) == (200, 200)
    assert slack.services.store.feedback_for(reply_id) == {"up": 1, "down": 0}

    # Changing one's mind replaces the rating.
    await slack.click(_click(reply_id, ts, "feedback_down", "1700000702.000001"))
    await slack.settle()
    assert slack.services.store.feedback_for(reply_id) == {"up": 0, "down": 1}
    assert slack.counts()["feedback"] == 1


async def test_a_button_naming_an_unknown_reply_is_acknowledged_and_stores_nothing(
    slack: Harness,
) -> None:
    before = slack.counts()
    response = await slack.click(_click("no-such-reply", "1.2", "feedback_up", "1700000703.1"))
    await slack.settle()
    assert response.status_code == 200
    assert slack.counts()["feedback"] == before["feedback"]


async def test_talk_to_a_person_speaks_for_the_user_in_the_same_thread(slack: Harness) -> None:
    reply_id, ts = await _answer(slack)
    await slack.click(_click(reply_id, ts, "handoff", "1700000704.000001"))
    await slack.settle()
    posts = slack.emulator.posts()
    assert len(posts) == 2
    assert posts[1]["thread_ts"] == "1700000100.000200"
    key = ConversationKey("slack", TEAM, "C0GENERAL", "1700000100.000200")
    conversation = slack.services.store.find_conversation(key)
    assert conversation is not None
    texts = [turn.text for turn in slack.services.store.history(conversation.id)]
    assert "I'd like to talk to a person" in texts


async def test_a_clarify_choice_asks_the_chosen_question(slack: Harness) -> None:
    reply_id, ts = await _answer(slack)
    choice = _click(
        reply_id,
        ts,
        "choose_1",
        "1700000705.000001",
        text={"type": "plain_text", "text": "Export a note to PDF", "emoji": True},
    )
    choice["actions"][0]["value"] = "export-pdf"
    await slack.click(choice)
    await slack.settle()
    posts = slack.emulator.posts()
    assert len(posts) == 2
    assert posts[1]["thread_ts"] == "1700000100.000200"
    assert "Export &gt; PDF" in posts[1]["text"]
