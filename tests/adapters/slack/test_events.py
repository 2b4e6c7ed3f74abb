"""What the bot answers on Slack, end to end: signed Events API requests into the real web app,
answers out to the local Slack."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from adapters.slack import SlackSettings
from adapters.slack.render import METADATA_EVENT_TYPE
from bot.model import ConversationKey, InboundMessage, Reply
from bot.service import Services
from tests.adapters.slack.conftest import AUTO_CHANNEL, Harness, payload, serve
from tests.adapters.slack.emulator import TEAM, SlackEmulator


def _action_ids(post: dict[str, Any]) -> dict[str, str]:
    return {
        element["action_id"]: element["value"]
        for block in post["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    }


async def test_url_verification_echoes_the_challenge(slack: Harness) -> None:
    body = payload("url_verification")
    response = await slack.send(body)
    assert response.status_code == 200
    assert body["challenge"] in response.text
    assert slack.emulator.posts() == []


async def test_app_mention_is_answered_once_in_its_thread_with_blocks_and_buttons(
    slack: Harness,
) -> None:
    response = await slack.send(payload("app_mention"))
    assert response.status_code == 200
    await slack.settle()

    posts = slack.emulator.posts()
    assert len(posts) == 1
    post = posts[0]
    assert post["channel"] == "C0GENERAL"
    assert post["thread_ts"] == "1700000100.000200"  # the question's own ts: a new thread
    assert "*Forgot password?*" in post["text"]  # Markdown bold became mrkdwn bold
    assert [block["type"] for block in post["blocks"]] == ["section", "context", "actions"]
    assert "<https://help.lumen-notes.example/" in post["blocks"][1]["elements"][0]["text"]
    reply_id = post["metadata"]["event_payload"]["reply_id"]
    assert post["metadata"]["event_type"] == METADATA_EVENT_TYPE
    assert _action_ids(post) == {
        "feedback_up": reply_id,
        "feedback_down": reply_id,
        "handoff": reply_id,
    }
    # Reactions and buttons find the reply from where it was posted.
    ts = slack.emulator.messages["C0GENERAL"][0]["ts"]
    posted = slack.services.engine.reply_posted_as(f"C0GENERAL:{ts}")
    assert posted is not None and posted.id == reply_id
    # The bot's mention was removed from what the engine read.
    key = ConversationKey("slack", TEAM, "C0GENERAL", "1700000100.000200")
    conversation = slack.services.store.find_conversation(key)
    assert conversation is not None
    history = slack.services.store.history(conversation.id)
    assert history[0].text == "How do I reset my password?"


async def test_a_dm_is_answered_at_the_top_level(slack: Harness) -> None:
    await slack.send(payload("message_im"))
    await slack.settle()
    [post] = slack.emulator.posts()
    assert post["channel"] == "D0DM"
    assert "thread_ts" not in post
    assert slack.services.engine.takes_part_in(ConversationKey("slack", TEAM, "D0DM", ""))


async def test_a_mention_delivered_as_app_mention_and_message_is_answered_once(
    slack: Harness,
) -> None:
    await asyncio.gather(
        slack.send(payload("message_channel_mention")), slack.send(payload("app_mention"))
    )
    await slack.settle()
    await slack.send(payload("message_channel_mention"))
    await slack.settle()
    assert len(slack.emulator.posts()) == 1


async def test_thread_replies_are_answered_only_in_threads_the_bot_is_in(slack: Harness) -> None:
    # Not in the thread yet: a reply there is neither answered nor stored.
    before = slack.counts()
    await slack.send(payload("message_thread_reply"))
    await slack.settle()
    assert slack.emulator.posts() == []
    assert slack.counts() == before

    await slack.send(payload("app_mention"))
    await slack.settle()
    reply = payload("message_thread_reply")
    reply["event_id"] = "Ev0THREAD02"
    reply["event"]["ts"] = reply["event"]["event_ts"] = "1700000120.000400"
    await slack.send(reply)
    await slack.settle()

    posts = slack.emulator.posts()
    assert len(posts) == 2
    assert posts[1]["thread_ts"] == "1700000100.000200"
    assert "*Export &gt; PDF*" in posts[1]["text"]  # escaped, as Slack wants


async def test_auto_answer_channels_answer_every_new_top_level_message(slack: Harness) -> None:
    await slack.send(payload("message_channel"))
    await slack.settle()
    [post] = slack.emulator.posts()
    assert post["channel"] == AUTO_CHANNEL
    assert post["thread_ts"] == "1700000300.000500"


async def test_other_channels_are_not_answered_without_a_mention(slack: Harness) -> None:
    before = slack.counts()
    message = payload("message_channel")
    message["event"]["channel"] = "C0ELSEWHERE"
    await slack.send(message)
    await slack.settle()
    assert slack.emulator.posts() == []
    assert slack.counts() == before


async def test_an_edit_before_the_answer_is_answered_once_in_its_edited_form(
    slack: Harness,
) -> None:
    # Written without a mention in a channel the bot does not watch: not answered...
    original = payload("message_channel")
    original["event"].update(channel="C0GENERAL", text="How do I sign up?")
    await slack.send(original)
    await slack.settle()
    assert slack.emulator.posts() == []

    # ...then edited to mention the bot: answered once, in the edited form.
    edit = payload("message_changed")
    edit["event"].update(channel="C0GENERAL", channel_type="channel")
    edit["event"]["message"].update(
        ts="1700000300.000500", text="<@U0BOT> How do I reset my password?"
    )
    edit["event"]["previous_message"].update(ts="1700000300.000500", text="How do I sign up?")
    await slack.send(edit)
    await slack.settle()
    [post] = slack.emulator.posts()
    assert post["thread_ts"] == "1700000300.000500"
    assert "Forgot password?" in post["text"]

    # A second edit gets no second answer.
    again = payload("message_changed")
    again["event_id"] = "Ev0EDIT02"
    again["event"].update(channel="C0GENERAL", channel_type="channel")
    again["event"]["message"].update(
        ts="1700000300.000500",
        text="<@U0BOT> How do I reset my password, please?",
        edited={"user": "U0CUST", "ts": "1700000270.000000"},
    )
    await slack.send(again)
    await slack.settle()
    assert len(slack.emulator.posts()) == 1


async def test_an_edit_after_the_answer_gets_no_second_answer(slack: Harness) -> None:
    await slack.send(payload("message_im"))
    await slack.settle()
    await slack.send(payload("message_changed"))
    await slack.settle()
    assert len(slack.emulator.posts()) == 1


async def test_slack_changes_that_are_not_edits_are_ignored(slack: Harness) -> None:
    unfurl = payload("message_changed")
    del unfurl["event"]["message"]["edited"]
    await slack.send(unfurl)
    await slack.settle()
    assert slack.emulator.posts() == []


async def test_retries_and_repeated_deliveries_post_one_answer(slack: Harness) -> None:
    event = payload("app_mention")
    first = await slack.send(event)
    retries = await asyncio.gather(
        *(
            slack.send(event, headers={"X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "x"})
            for n in (1, 2, 3)
        )
    )
    await slack.settle()
    assert {r.status_code for r in (first, *retries)} == {200}
    assert len(slack.emulator.posts()) == 1
    # The same message delivered again under another event id is still answered once.
    event["event_id"] = "Ev0MENTION99"
    await slack.send(event)
    await slack.settle()
    assert len(slack.emulator.posts()) == 1


@pytest.mark.parametrize("name", ["message_self", "message_bot"])
async def test_own_and_other_bots_messages_are_ignored(slack: Harness, name: str) -> None:
    before = slack.counts()
    response = await slack.send(payload(name))
    await slack.settle()
    assert response.status_code == 200
    assert slack.emulator.posts() == []
    assert slack.counts() == before


async def test_the_ack_comes_before_the_answer(
    slack: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = slack.services.engine
    real_handle = engine.handle

    def slow_handle(message: InboundMessage) -> list[Reply]:
        time.sleep(2.0)  # a slow model: longer than it may take to acknowledge
        return real_handle(message)

    monkeypatch.setattr(engine, "handle", slow_handle)
    started = time.perf_counter()
    response = await slack.send(payload("app_mention"))
    acked = time.perf_counter() - started
    assert response.status_code == 200
    assert acked < 1.0
    assert slack.emulator.posts() == []
    await slack.settle()
    assert len(slack.emulator.posts()) == 1


async def test_shutdown_waits_for_answers_in_flight(
    services: Services,
    slack_settings: SlackSettings,
    emulator: SlackEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_handle = services.engine.handle

    def slow_handle(message: InboundMessage) -> list[Reply]:
        time.sleep(0.5)
        return real_handle(message)

    monkeypatch.setattr(services.engine, "handle", slow_handle)
    async with serve(services, slack_settings, emulator) as harness:
        await harness.send(payload("app_mention"))
    # The server stopped only after the answer went out.
    assert len(emulator.posts()) == 1
