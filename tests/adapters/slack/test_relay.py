"""Slack → Slack handoff relay: the customer in a DM, agents in the agents' channel.

The real web app with the Slack adapter runs against the Slack emulator; the relay runs in the
adapter's lifetime loop with a short polling interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import SlackSettings
from adapters.slack.outbound import fixed_client, make_client
from adapters.slack.relay import SlackCustomerChannel, SlackDesk
from bot.engine import Engine, Responder
from bot.model import ConversationKey, Owner
from bot.relay import Relay, RelayConfig
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.adapters.slack.conftest import (
    AGENTS_CHANNEL,
    BOT_TOKEN,
    Harness,
    make_settings,
    payload,
    serve,
    short_policies,
)
from tests.adapters.slack.emulator import SlackEmulator
from tests.support import Killed, PostsThenDies, SetClock, enqueue_both_ways

DM = "D0DM"
KEY = ConversationKey("slack", "T0TEST", DM, "")
_ids = count(1)


def _relay_services(tmp_path: Path, kb: KnowledgeBase, timeout_s: float) -> Services:
    store = Store.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = Relay(store, RelayConfig(desk="slack", timeout_s=timeout_s, poll_s=0.05))
    retriever = Retriever(kb)
    engine = Engine(
        store,
        Responder(retriever, confidence_model(kb)),
        policies=short_policies(),
        handoff_sink=relay,
    )
    return Services(Settings(data_dir=tmp_path), store, kb, retriever, engine, relay)


@pytest.fixture
def relay_services(tmp_path: Path, slack_kb: KnowledgeBase) -> Iterator[Services]:
    built = _relay_services(tmp_path, slack_kb, timeout_s=60)
    try:
        yield built
    finally:
        built.store.close()


@pytest.fixture
async def slack(
    relay_services: Services, slack_settings: SlackSettings, emulator: SlackEmulator
) -> AsyncIterator[Harness]:
    async with serve(relay_services, slack_settings, emulator) as harness:
        yield harness


def _dm(text: str) -> dict[str, Any]:
    n = next(_ids)
    body = payload("message_im")
    body["event_id"] = f"Ev0DMR{n}"
    body["event"].update(text=text, ts=f"1700009{n:03d}.000001", event_ts=f"1700009{n:03d}.000001")
    body["event"]["client_msg_id"] = f"relay-{n}"
    return body


def _agent(text: str, card_ts: str, *, ts: str | None = None) -> dict[str, Any]:
    n = next(_ids)
    body = payload("message_agents_thread")
    body["event_id"] = f"Ev0AGR{n}"
    stamp = ts or f"1700008{n:03d}.000001"
    body["event"].update(text=text, ts=stamp, event_ts=stamp, thread_ts=card_ts)
    return body


def _texts(emulator: SlackEmulator, channel: str, thread: str | None = None) -> list[str]:
    return [
        m["text"]
        for m in emulator.messages[channel]
        if thread is None or m.get("thread_ts") == thread
    ]


async def _hand_over(slack: Harness) -> str:
    """The customer asks for a person; returns the ts of the card opened for them."""
    before = len(slack.emulator.messages[AGENTS_CHANNEL])
    told = len(_texts(slack.emulator, DM))
    await slack.send(_dm("I want to talk to a person"))
    await slack.settle()

    def cards() -> list[dict[str, Any]]:
        posted = slack.emulator.messages[AGENTS_CHANNEL][before:]
        return [m for m in posted if "thread_ts" not in m]

    await slack.emulator.wait_for(lambda: len(cards()) == 1)
    # The card can open before the customer's "a person will reply" is posted: wait for both,
    # so what the agent does next is not raced by it.
    await slack.emulator.wait_for(lambda: len(_texts(slack.emulator, DM)) == told + 1)
    card_ts = str(cards()[0]["ts"])
    # The emulator shows the card before chat.postMessage returns, so before the relay has
    # recorded the card's reference: an agent's reply in that instant would find no card.
    store = slack.services.store
    await slack.emulator.wait_for(
        lambda: store.relay_link_by_card(f"{AGENTS_CHANNEL}:{card_ts}") is not None
    )
    return card_ts


async def test_slack_to_slack_claim_relay_release_and_resolve(slack: Harness) -> None:
    emulator, store = slack.emulator, slack.services.store
    relay = slack.services.relay
    assert relay is not None
    card_ts = await _hand_over(slack)
    handoff_reply = _texts(emulator, DM)
    assert len(handoff_reply) == 1  # the bot said a person will reply

    # While human-owned the bot is silent; the customer's words reach the card's thread.
    await slack.send(_dm("my invoice shows the wrong amount"))
    await slack.settle()
    await emulator.wait_for(
        lambda: _texts(emulator, AGENTS_CHANNEL, card_ts) == ["my invoice shows the wrong amount"]
    )
    assert _texts(emulator, DM) == handoff_reply

    # The first agent reply claims the conversation and reaches the customer, once.
    reply = _agent("Hi, I am Ana from support. Let me look.", card_ts)
    await slack.send(reply)
    await slack.send(reply, headers={"X-Slack-Retry-Num": "1"})
    again = dict(reply, event_id="Ev0AGRDUP")  # a second event for the same message
    await slack.send(again)
    await slack.settle()
    await emulator.wait_for(lambda: len(_texts(emulator, DM)) == 3)
    await emulator.wait_for(lambda: len(_texts(emulator, AGENTS_CHANNEL, card_ts)) == 2)
    assert _texts(emulator, DM)[1:] == [
        relay.config.claimed_text,
        "Hi, I am Ana from support. Let me look.",
    ]
    conversation = store.find_conversation(KEY)
    assert conversation is not None and conversation.owner is Owner.HUMAN
    link = store.relay_link(conversation.id)
    assert link is not None and (link.state, link.claimed_by) == ("claimed", "U0AGENT")
    assert link.claimed_at is not None

    # The relay's own posts in the card thread (the bot's) are never relayed back.
    assert _texts(emulator, AGENTS_CHANNEL, card_ts)[1] == "Claimed by U0AGENT."

    # !release: the customer is told and the bot answers again.
    await slack.send(_agent("!release", card_ts))
    await slack.settle()
    await emulator.wait_for(lambda: len(_texts(emulator, DM)) == 4)
    assert _texts(emulator, DM)[3] == relay.config.released_text
    conversation = store.find_conversation(KEY)
    assert conversation is not None and conversation.owner is Owner.BOT
    await slack.send(_dm("How do I reset my password?"))
    await slack.settle()
    await emulator.wait_for(lambda: len(_texts(emulator, DM)) == 5)

    # A second handoff gets a new card; !resolve closes the conversation.
    second = await _hand_over(slack)
    assert second != card_ts
    await slack.send(_agent("!resolve", second))
    await slack.settle()
    await emulator.wait_for(lambda: _texts(emulator, DM)[-1] == relay.config.resolved_text)
    conversation = store.find_conversation(KEY)
    assert conversation is not None
    assert (conversation.status, conversation.owner) == ("closed", Owner.BOT)

    # Nothing was relayed twice.
    conversation_id = conversation.id
    await emulator.wait_for(
        lambda: all(item.status == "sent" for item in store.relay_outbox(conversation_id))
    )
    items = store.relay_outbox(conversation_id)
    assert len({item.origin_key for item in items}) == len(items)
    dm_texts = _texts(emulator, DM)
    assert dm_texts.count("Hi, I am Ana from support. Let me look.") == 1


async def test_unclaimed_handoff_times_out(
    tmp_path: Path, slack_kb: KnowledgeBase, slack_settings: SlackSettings, emulator: SlackEmulator
) -> None:
    services = _relay_services(tmp_path, slack_kb, timeout_s=0.3)
    try:
        async with serve(services, slack_settings, emulator) as slack:
            relay = services.relay
            assert relay is not None
            await _hand_over(slack)
            await emulator.wait_for(
                lambda: _texts(emulator, DM)[-1:] == [_timeout_text(relay)], within=10
            )
            conversation = services.store.find_conversation(KEY)
            assert conversation is not None and conversation.owner is Owner.BOT
            link = services.store.relay_link(conversation.id)
            assert link is not None and link.state == "released"
    finally:
        services.store.close()


def _timeout_text(relay: Relay) -> str:
    return relay.config.timeout_text.format(contact=relay.config.contact)


# A relayed post that reached Slack before its process died is not posted again -----------------


async def test_a_relayed_post_that_reached_slack_before_its_process_died_is_not_repeated(
    tmp_path: Path, emulator: SlackEmulator
) -> None:
    client = make_client(make_settings(emulator), BOT_TOKEN)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [Store.from_url(url), Store.from_url(url)]
    card_ref = f"{AGENTS_CHANNEL}:1700000000.000100"
    try:
        conversation = stores[0].get_or_create_conversation(KEY, "U0CUSTOMER")
        enqueue_both_ways(
            stores[0],
            conversation.id,
            "slack",
            to_agent=(card_ref, "my invoice is wrong"),
            to_customer=(str(KEY), "Hi, Ana here."),
        )
        clock = SetClock(datetime.now(UTC))
        dying = Relay(stores[0], RelayConfig(desk="slack"), clock=clock)
        dying.register_desk("slack", PostsThenDies(SlackDesk(client, AGENTS_CHANNEL)))
        dying.register_channel("slack", PostsThenDies(SlackCustomerChannel(fixed_client(client))))
        for _ in range(2):  # each round dies at its first post, as a process would
            with pytest.raises(Killed):
                await dying.deliver_pending("slack")
        assert _texts(emulator, AGENTS_CHANNEL) == ["my invoice is wrong"]
        assert _texts(emulator, DM) == ["Hi, Ana here."]
        assert {i.status for i in stores[1].relay_outbox(conversation.id)} == {"posting"}
        assert not emulator.calls_to("conversations.replies")  # a first try looks for nothing

        survivor = Relay(stores[1], RelayConfig(desk="slack"), clock=clock)
        survivor.register_desk("slack", SlackDesk(client, AGENTS_CHANNEL))
        survivor.register_channel("slack", SlackCustomerChannel(fixed_client(client)))
        assert await survivor.deliver_pending("slack") == 0  # the claims are still fresh
        clock.now += timedelta(seconds=survivor.config.claim_timeout_s)
        assert await survivor.deliver_pending("slack") == 2
        # Found by their metadata: one message each on Slack.
        assert _texts(emulator, AGENTS_CHANNEL) == ["my invoice is wrong"]
        assert _texts(emulator, DM) == ["Hi, Ana here."]
        assert len(emulator.calls_to("conversations.replies")) == 1
        assert len(emulator.calls_to("conversations.history")) == 1
        assert {i.status for i in stores[1].relay_outbox(conversation.id)} == {"sent"}
        for channel in (AGENTS_CHANNEL, DM):
            [message] = emulator.messages[channel]
            assert stores[1].has_event("slack", f"relay-post:{message['ts']}")
    finally:
        for store in stores:
            store.close()
