"""Slack's inbox and outbox recovery (`adapters.slack.recovery`) with `bot.outbox.Sweeper`.

The real SDK posts to the local emulator; the rows are what a process that died left behind:
an accepted event nobody answered, a stored reply nobody sent (or sent without recording it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import render
from adapters.slack.convert import PLATFORM, Route
from adapters.slack.outbound import fixed_client, make_client, post_once
from adapters.slack.recovery import SlackInbox, SlackReplySender, inbox_payload
from bot.model import InboundMessage, Reply, Role
from bot.outbox import Destination, Sweeper, reply_from_stored
from bot.service import Services
from knowledge.base import KnowledgeBase
from tests.adapters.slack.conftest import BOT_TOKEN, build_test_services, make_settings
from tests.adapters.slack.emulator import SlackEmulator

CHANNEL = "D0OUTBOX"
TEAM = "T0OUTBOX"


def _dm(ts: str, text: str = "How do I reset my password?") -> InboundMessage:
    return InboundMessage(
        platform=PLATFORM,
        workspace=TEAM,
        channel=CHANNEL,
        user="U0CUSTOMER",
        message_id=f"{CHANNEL}:{ts}",
        text=text,
    )


def _stored_reply(services: Services, text: str = "Open Settings, then Reset.") -> str:
    """A reply stored for a DM question whose process died before posting it."""
    message = _dm("1700000000.000100")
    store = services.store
    conversation = store.get_or_create_conversation(message.conversation, message.user)
    row = store.add_message(conversation.id, Role.USER, message.user, message.text, "q1")
    reply = Reply.answer(text, ())
    destination = Destination.of(message, reply).to_json()
    return store.add_reply(conversation.id, row, reply, destination=destination, hold_s=-1)


def _sweeper(services: Services, emulator: SlackEmulator) -> Sweeper:
    sweeper = Sweeper(services.store, hold_s=30, interval_s=0.1)
    client = make_client(make_settings(emulator), BOT_TOKEN)
    sweeper.add_sender(SlackReplySender(fixed_client(client)))
    return sweeper


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_services(
    request: pytest.FixtureRequest, tmp_path: Path, slack_kb: KnowledgeBase
) -> Iterator[Services]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    built = build_test_services(url, tmp_path, slack_kb)
    try:
        yield built
    finally:
        built.store.close()


async def test_an_unsent_reply_is_posted_once(services: Services, emulator: SlackEmulator) -> None:
    reply_id = _stored_reply(services)
    sweeper = _sweeper(services, emulator)

    counts = await sweeper.sweep()
    assert counts.resent == 1
    (posted,) = emulator.messages[CHANNEL]
    assert posted["metadata"]["event_payload"]["reply_id"] == reply_id
    assert "thread_ts" not in posted  # a DM is answered at the top level
    assert services.store.reply_delivery(reply_id) == ("sent", 1)
    info = services.store.get_reply(reply_id)
    assert info is not None and info.platform_ref == f"{CHANNEL}:{posted['ts']}"
    # The 👍/👎 buttons came back from the destination.
    assert any(block["type"] == "actions" for block in posted["blocks"])

    assert not await sweeper.sweep()
    assert len(emulator.messages[CHANNEL]) == 1


async def test_a_reply_posted_before_the_crash_is_not_posted_again(
    services: Services, emulator: SlackEmulator
) -> None:
    reply_id = _stored_reply(services)
    info = services.store.get_reply(reply_id)
    assert info is not None
    # The dead process got as far as posting; it never recorded the post.
    client = make_client(make_settings(emulator), BOT_TOKEN)
    ts = await post_once(
        client,
        channel=CHANNEL,
        thread_ts=None,
        message=render.reply_message(reply_from_stored(info)),
        reply_id=reply_id,
    )

    counts = await _sweeper(services, emulator).sweep()
    assert counts.resent == 1
    assert len(emulator.messages[CHANNEL]) == 1
    stored = services.store.get_reply(reply_id)
    assert stored is not None and stored.platform_ref == f"{CHANNEL}:{ts}"


async def test_two_sweepers_post_a_reply_once(
    any_services: Services, emulator: SlackEmulator
) -> None:
    reply_ids = {_stored_reply(any_services, f"Answer {n}.") for n in range(4)}
    first, second = _sweeper(any_services, emulator), _sweeper(any_services, emulator)

    results = await asyncio.gather(first.sweep(), second.sweep())

    assert sum(r.resent for r in results) == 4
    posted = [m["metadata"]["event_payload"]["reply_id"] for m in emulator.messages[CHANNEL]]
    assert sorted(posted) == sorted(reply_ids)
    assert {any_services.store.reply_delivery(r) for r in reply_ids} == {("sent", 1)}


async def test_an_abandoned_event_is_answered_by_a_sweeper_once(
    services: Services, emulator: SlackEmulator
) -> None:
    message = _dm("1700000001.000100")
    store = services.store
    # Accepted and acknowledged by a process that died at once (its hold is over).
    assert store.accept_inbound(
        PLATFORM, "event:Ev1", inbox_payload(message, Route.ANSWER), hold_s=-1
    )
    sweeper = _sweeper(services, emulator)
    client = make_client(make_settings(emulator), BOT_TOKEN)

    async def post(client: AsyncWebClient, inbound: InboundMessage, reply: Reply) -> None:
        ts = await post_once(
            client,
            channel=inbound.channel,
            thread_ts=inbound.thread or None,
            message=render.reply_message(reply),
            reply_id=reply.id,
        )
        await asyncio.to_thread(store.set_reply_platform_ref, reply.id, f"{inbound.channel}:{ts}")

    sweeper.add_inbox(SlackInbox(services.engine, fixed_client(client), post))

    counts = await sweeper.sweep()
    assert counts.redelivered == 1 and counts.resent == 0
    (posted,) = emulator.messages[CHANNEL]
    stored = store.latest_reply(store.get_or_create_conversation(message.conversation, "-").id)
    assert stored is not None and stored.platform_ref == f"{CHANNEL}:{posted['ts']}"
    assert posted["metadata"]["event_payload"]["reply_id"] == stored.id
    assert store.inbox_status(PLATFORM, "event:Ev1") == "done"
    assert not await sweeper.sweep()
    assert len(emulator.messages[CHANNEL]) == 1
    assert store.counts()["reply"] == 1


async def test_a_redelivered_event_already_answered_gets_no_second_answer(
    services: Services, emulator: SlackEmulator
) -> None:
    message = _dm("1700000002.000100")
    store = services.store
    assert store.accept_inbound(
        PLATFORM, "event:Ev2", inbox_payload(message, Route.ANSWER), hold_s=-1
    )
    # The turn ran and stored its reply; the process died before marking the row done.
    (answer,) = await asyncio.to_thread(services.engine.handle, message)
    posts: list[tuple[InboundMessage, Reply]] = []

    async def post(client: AsyncWebClient, inbound: InboundMessage, reply: Reply) -> None:
        posts.append((inbound, reply))

    sweeper = Sweeper(store, hold_s=30)
    client = make_client(make_settings(emulator), BOT_TOKEN)
    sweeper.add_inbox(SlackInbox(services.engine, fixed_client(client), post))
    counts = await sweeper.sweep()

    assert counts.redelivered == 1
    assert posts == []  # the stored reply goes out through the outbox, not a second turn
    assert store.inbox_status(PLATFORM, "event:Ev2") == "done"
    assert store.counts()["reply"] == 1
    assert store.reply_delivery(answer.id) == ("pending", 0)
