"""Limits and retries on the way out: 429 Retry-After, and a timed-out post never posted twice."""

from __future__ import annotations

import time

import pytest

from adapters.slack.outbound import PostError, make_client, post_once
from adapters.slack.render import reply_message
from adapters.slack.settings import SlackSettings
from bot.model import Reply, Source
from bot.service import Services
from tests.adapters.slack.conftest import BOT_TOKEN, make_settings, payload, serve
from tests.adapters.slack.emulator import Fault, SlackEmulator

REPLY = Reply.answer("**Hi**", (Source("faq", 0.9, "FAQ", "https://example.com/faq"),))


async def test_a_429_is_retried_after_the_time_slack_asks_for(
    services: Services, emulator: SlackEmulator
) -> None:
    emulator.fail_next("chat.postMessage", Fault("ratelimit", seconds=1))
    async with serve(services, make_settings(emulator), emulator) as slack:
        await slack.send(payload("app_mention"))
        await slack.settle()
    times = [
        at
        for call, at in zip(emulator.calls, emulator.call_times, strict=True)
        if call.method == "chat.postMessage"
    ]
    assert len(times) == 2  # the refused one, then the retry
    assert len(emulator.messages["C0GENERAL"]) == 1  # posted once
    assert times[1] - times[0] >= 1.0  # Retry-After: 1


async def test_a_post_that_timed_out_after_arriving_is_not_posted_again(
    services: Services, emulator: SlackEmulator
) -> None:
    # Slack stores the message, but the answer comes after the client gave up.
    emulator.fail_next("chat.postMessage", Fault("slow", seconds=2.0))
    settings = make_settings(emulator, http_timeout=0.5)
    async with serve(services, settings, emulator) as slack:
        await slack.send(payload("app_mention"))
        await slack.settle()
        assert len(emulator.calls_to("chat.postMessage")) == 1
        assert len(emulator.calls_to("conversations.replies")) == 1
        [message] = emulator.messages["C0GENERAL"]
        # The reply is tied to the copy that did arrive.
        found = slack.services.engine.reply_posted_as(f"C0GENERAL:{message['ts']}")
        assert found is not None
        assert found.id == message["metadata"]["event_payload"]["reply_id"]


async def test_a_post_that_timed_out_before_arriving_is_posted_again(
    emulator: SlackEmulator,
) -> None:
    emulator.fail_next("chat.postMessage", Fault("lost", seconds=2.0))
    client = make_client(make_settings(emulator, http_timeout=0.5), BOT_TOKEN)
    reply = Reply.answer("Hi", ())
    reply = Reply(reply.text, reply.kind, reply.sources, reply.actions, id="r1")
    ts = await post_once(
        client, channel="D0DM", thread_ts=None, message=reply_message(reply), reply_id="r1"
    )
    assert len(emulator.calls_to("chat.postMessage")) == 2
    assert len(emulator.calls_to("conversations.history")) == 1
    assert [m["ts"] for m in emulator.messages["D0DM"]] == [ts]


async def test_without_a_reply_id_a_timed_out_post_is_not_retried(
    emulator: SlackEmulator,
) -> None:
    emulator.fail_next("chat.postMessage", Fault("slow", seconds=2.0))
    client = make_client(make_settings(emulator, http_timeout=0.5), BOT_TOKEN)
    started = time.perf_counter()
    with pytest.raises(PostError):
        await post_once(client, channel="D0DM", thread_ts=None, message=reply_message(REPLY))
    assert time.perf_counter() - started < 1.5
    assert len(emulator.calls_to("chat.postMessage")) == 1


async def test_slack_refusing_a_message_is_a_post_error(emulator: SlackEmulator) -> None:
    client = make_client(SlackSettings(bot_token=BOT_TOKEN, api_url=emulator.api_url), None)
    with pytest.raises(PostError, match="channel_not_found"):
        await post_once(client, channel="", thread_ts=None, message=reply_message(REPLY))
