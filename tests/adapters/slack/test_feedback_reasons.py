"""After a 👎 on Slack the bot offers quick reasons as buttons; the choice is stored, and
"talk to a person" hands the conversation over."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from bot.model import ConversationKey, FeedbackReason, Owner
from bot.storage.tables import Feedback
from tests.adapters.slack.conftest import Harness, payload
from tests.adapters.slack.emulator import TEAM

THREAD = "1700000100.000200"
KEY = ConversationKey("slack", TEAM, "C0GENERAL", THREAD)


async def _answer(slack: Harness) -> tuple[str, str]:
    await slack.send(payload("app_mention"))
    await slack.settle()
    [post] = slack.emulator.posts()
    ts = slack.emulator.messages["C0GENERAL"][-1]["ts"]
    return post["metadata"]["event_payload"]["reply_id"], ts


def _click(reply_id: str, ts: str, action_id: str, action_ts: str) -> dict[str, Any]:
    body = payload("block_actions")
    body["container"]["message_ts"] = body["message"]["ts"] = ts
    body["actions"][0].update(action_id=action_id, value=reply_id, action_ts=action_ts)
    return body


def _reasons(slack: Harness, reply_id: str) -> dict[str, str]:
    """The reason buttons posted so far: action id → the value (the rated reply's id)."""
    found: dict[str, str] = {}
    for post in slack.emulator.posts():
        for block in post.get("blocks") or []:
            for element in block.get("elements") or []:
                if str(element.get("action_id", "")).startswith("feedback_reason_"):
                    found[element["action_id"]] = element["value"]
    return found


def _rows(slack: Harness, reply_id: str) -> list[Feedback]:
    with Session(slack.services.store.engine) as session:
        return list(session.exec(select(Feedback).where(Feedback.reply_id == reply_id)).all())


async def test_a_thumbs_down_button_offers_reasons_and_the_choice_is_stored(
    slack: Harness,
) -> None:
    reply_id, ts = await _answer(slack)
    await slack.click(_click(reply_id, ts, "feedback_down", "1700000800.000001"))
    await slack.settle()

    posts = slack.emulator.posts()
    assert len(posts) == 2
    assert posts[1]["thread_ts"] == THREAD
    assert "metadata" not in posts[1] or not posts[1]["metadata"]
    assert _reasons(slack, reply_id) == {
        f"feedback_reason_{reason.value}": reply_id for reason in FeedbackReason
    }

    await slack.click(_click(reply_id, ts, "feedback_reason_outdated", "1700000801.000001"))
    await slack.settle()
    [row] = _rows(slack, reply_id)
    assert (row.value, row.reason, row.platform) == ("down", "outdated", "slack")
    assert len(slack.emulator.posts()) == 2  # a reason gets no further message
    # The reasons message did not take over the reply's place: reactions still find the answer.
    found = slack.services.engine.reply_posted_as(f"C0GENERAL:{ts}")
    assert found is not None and found.id == reply_id


async def test_a_thumbs_down_reaction_offers_reasons_too(slack: Harness) -> None:
    reply_id, ts = await _answer(slack)
    body = payload("reaction_added")
    body["event"]["reaction"] = "-1"
    body["event"]["item"]["ts"] = ts
    await slack.send(body)
    await slack.settle()
    assert len(_reasons(slack, reply_id)) == len(FeedbackReason)


async def test_the_reason_talk_to_a_person_hands_the_conversation_over(slack: Harness) -> None:
    reply_id, ts = await _answer(slack)
    await slack.click(_click(reply_id, ts, "feedback_down", "1700000802.000001"))
    await slack.settle()
    await slack.click(_click(reply_id, ts, "feedback_reason_talk_to_person", "1700000803.000001"))
    await slack.settle()

    [row] = _rows(slack, reply_id)
    assert row.reason == "talk_to_person"
    assert slack.services.engine.owner_of(KEY) is Owner.HUMAN
    thread_posts = [p for p in slack.emulator.posts() if p.get("thread_ts") == THREAD]
    assert len(thread_posts) == 3  # the reasons, then the handoff reply
    assert thread_posts[-1]["metadata"]["event_payload"]["reply_id"] != reply_id


async def test_an_unknown_reason_stores_nothing(slack: Harness) -> None:
    reply_id, ts = await _answer(slack)
    await slack.click(_click(reply_id, ts, "feedback_reason_because", "1700000804.000001"))
    await slack.settle()
    assert _rows(slack, reply_id) == []
