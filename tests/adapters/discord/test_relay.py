"""Discord → Discord handoff relay: the customer in a DM, agents in the agents' channel."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.discord.client import SupportBotClient
from adapters.discord.relay import DiscordCustomerChannel, DiscordDesk
from bot.engine import Engine
from bot.model import ConversationKey, Owner
from bot.relay import Relay, RelayConfig
from bot.service import Services
from bot.storage.store import Store
from tests.adapters.discord.conftest import WAIT, running, short_policies
from tests.adapters.discord.fake_discord import FakeDiscord, user
from tests.support import Killed, PostsThenDies, SetClock, enqueue_both_ways


async def test_discord_desk_claim_relay_and_resolve(
    fake: FakeDiscord, services: Services, tmp_path: Path
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = Relay(store, RelayConfig(desk="discord", poll_s=0.05))
    engine = Engine(store, services.engine.responder, policies=short_policies(), handoff_sink=relay)
    agent = fake.snowflake()
    fake.users[agent] = user(agent, "ana")
    key = ConversationKey("discord", "@me", str(fake.dm_channel))

    def dm_texts() -> list[str]:
        return [m["content"] for m in fake.bot_messages(fake.dm_channel)]

    try:
        async with running(fake, engine):
            await fake.post_message(fake.dm_channel, "I want to talk to a person")
            (card,) = await fake.wait_for(
                lambda: [m for m in fake.bot_messages(fake.agents_channel) if m["embeds"]],
                WAIT,
                "the handoff card",
            )
            card_id = int(card["id"])
            await fake.wait_for(lambda: card_id in fake.channels, WAIT, "the card's thread")
            await fake.wait_for(lambda: len(dm_texts()) == 1, WAIT, "the handoff message")

            await fake.post_message(fake.dm_channel, "my invoice shows the wrong amount")
            await fake.wait_for(
                lambda: (
                    [m["content"] for m in fake.bot_messages(card_id)]
                    == ["my invoice shows the wrong amount"]
                ),
                WAIT,
                "the customer's message in the card's thread",
            )
            assert len(dm_texts()) == 1  # the bot stays silent

            await fake.post_message(card_id, "Hi, this is Ana.", author_id=agent)
            await fake.wait_for(lambda: len(dm_texts()) == 3, WAIT, "the agent's reply")
            assert dm_texts()[1:] == [relay.config.claimed_text, "Hi, this is Ana."]
            conversation = store.find_conversation(key)
            assert conversation is not None
            link = store.relay_link(conversation.id)
            assert link is not None and (link.state, link.claimed_by) == ("claimed", str(agent))

            await fake.post_message(card_id, "!resolve", author_id=agent)
            await fake.wait_for(
                lambda: dm_texts()[-1] == relay.config.resolved_text, WAIT, "resolved"
            )
            conversation = store.find_conversation(key)
            assert conversation is not None
            assert (conversation.status, conversation.owner) == ("closed", Owner.BOT)
            # The relay's own posts in the card thread were not relayed back to the customer.
            assert "Claimed by" not in " ".join(dm_texts())
    finally:
        store.close()


# A relayed post that reached Discord before its process died is not posted again ---------------


async def test_a_relayed_post_that_reached_discord_before_its_process_died_is_not_repeated(
    fake: FakeDiscord,
    bot: Callable[..., AbstractAsyncContextManager[SupportBotClient]],
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [Store.from_url(url), Store.from_url(url)]
    key = ConversationKey("discord", "@me", str(fake.dm_channel))
    card_ref = f"{fake.agents_channel}:{fake.agents_channel}"
    try:
        conversation = stores[0].get_or_create_conversation(key, "42")
        enqueue_both_ways(
            stores[0],
            conversation.id,
            "discord",
            to_agent=(card_ref, "my invoice is wrong"),
            to_customer=(str(key), "Hi, Ana here."),
        )

        def texts(channel: int) -> list[str]:
            return [m["content"] for m in fake.bot_messages(channel)]

        async with bot() as client:
            clock = SetClock(datetime.now(UTC))
            dying = Relay(stores[0], RelayConfig(desk="discord"), clock=clock)
            dying.register_desk("discord", PostsThenDies(DiscordDesk(client)))
            dying.register_channel("discord", PostsThenDies(DiscordCustomerChannel(client)))
            for _ in range(2):  # each round dies at its first post, as a process would
                with pytest.raises(Killed):
                    await dying.deliver_pending("discord")
            assert texts(fake.agents_channel) == ["my invoice is wrong"]
            assert texts(fake.dm_channel) == ["Hi, Ana here."]
            assert {i.status for i in stores[1].relay_outbox(conversation.id)} == {"posting"}

            survivor = Relay(stores[1], RelayConfig(desk="discord"), clock=clock)
            survivor.register_desk("discord", DiscordDesk(client))
            survivor.register_channel("discord", DiscordCustomerChannel(client))
            assert await survivor.deliver_pending("discord") == 0  # the claims are fresh
            clock.now += timedelta(seconds=survivor.config.claim_timeout_s)
            assert await survivor.deliver_pending("discord") == 2
            # Discord handed back the messages their nonces had created: one each.
            assert texts(fake.agents_channel) == ["my invoice is wrong"]
            assert texts(fake.dm_channel) == ["Hi, Ana here."]
            assert {i.status for i in stores[1].relay_outbox(conversation.id)} == {"sent"}
            for channel in (fake.agents_channel, fake.dm_channel):
                [message] = fake.bot_messages(channel)
                assert stores[1].has_event("discord", f"relay-post:{message['id']}")
    finally:
        for store in stores:
            store.close()
