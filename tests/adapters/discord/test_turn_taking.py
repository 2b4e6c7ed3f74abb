"""Turn-taking on Discord, through the fake gateway: bursts are one turn, typing keeps the turn
open, and a ✅ from the customer resolves the conversation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.discord import build_client, discord_endpoints
from adapters.discord.client import SupportBotClient
from bot.debounce import ManualClock
from bot.engine import Engine
from bot.model import ConversationKey
from policies.config import PolicyConfig
from tests.adapters.discord.conftest import WAIT, discord_settings, short_policies
from tests.adapters.discord.fake_discord import TOKEN, FakeDiscord, user

QUESTION = "How do I reset my password?"


def _with_window(engine: Engine, seconds: float) -> Engine:
    """The test's engine (same database and knowledge) with another burst window."""
    return Engine(
        engine.store, engine.responder, policies=short_policies(burst_window_seconds=seconds)
    )


@asynccontextmanager
async def _running(
    fake: FakeDiscord, engine: Engine, clock: ManualClock | None = None
) -> AsyncIterator[SupportBotClient]:
    settings = discord_settings(fake)
    client = build_client(settings, engine, guild_ready_timeout=0.05, clock=clock)
    with discord_endpoints(settings.api_url, settings.gateway_url):
        task = asyncio.create_task(client.start(TOKEN))
        try:
            await asyncio.wait_for(client.wait_until_ready(), WAIT)
            yield client
        finally:
            await asyncio.wait_for(client.close(), WAIT)
            await asyncio.wait_for(task, WAIT)


def _dm_key(fake: FakeDiscord) -> ConversationKey:
    return ConversationKey("discord", "@me", str(fake.dm_channel))


async def test_a_burst_of_messages_gets_one_answer(fake: FakeDiscord, engine: Engine) -> None:
    async with _running(fake, _with_window(engine, 1.0)):
        for text in ("hi", "I can't get into my account", QUESTION):
            await fake.post_message(fake.dm_channel, text)
        await fake.wait_for(lambda: fake.bot_messages(fake.dm_channel), WAIT, "the answer")
        await asyncio.sleep(1.2)  # longer than the window: no second answer comes
        assert len(fake.posts(fake.dm_channel)) == 1

    conversation = engine.store.find_conversation(_dm_key(fake))
    assert conversation is not None
    texts = [turn.text for turn in engine.store.history(conversation.id)]
    assert texts[:3] == ["hi", "I can't get into my account", QUESTION]
    assert len(texts) == 4


async def test_typing_keeps_the_turn_open_one_more_window(
    fake: FakeDiscord, engine: Engine
) -> None:
    clock = ManualClock()
    key, user = _dm_key(fake), str(fake.customer_id)
    async with _running(fake, _with_window(engine, 2.0), clock) as client:
        await fake.post_message(fake.dm_channel, QUESTION)
        await fake.wait_for(lambda: client.debouncer().pending(key, user), WAIT, "a pending turn")
        await clock.advance(1.5)
        await fake.dispatch(
            "TYPING_START",
            {
                "channel_id": str(fake.dm_channel),
                "user_id": user,
                "timestamp": int(time.time()),
            },
        )
        await asyncio.sleep(0.3)  # the gateway delivers the typing event
        await clock.advance(1.0)  # past the first window, within the extended one
        assert client.debouncer().pending(key, user)
        assert fake.posts(fake.dm_channel) == []

        await clock.advance(1.5)
        await fake.wait_for(lambda: fake.bot_messages(fake.dm_channel), WAIT, "the answer")
        assert len(fake.posts(fake.dm_channel)) == 1


async def test_a_check_mark_from_the_customer_resolves_the_conversation(
    fake: FakeDiscord, engine: Engine
) -> None:
    key = _dm_key(fake)
    async with _running(fake, engine):
        await fake.post_message(fake.dm_channel, QUESTION)
        (answer,) = await fake.wait_for(
            lambda: fake.bot_messages(fake.dm_channel), WAIT, "the answer"
        )
        await fake.react(int(answer["id"]), "✅")

        def status() -> str | None:
            conversation = engine.store.find_conversation(key)
            return None if conversation is None else conversation.status

        await fake.wait_for(lambda: status() == "closed", WAIT, "the conversation resolved")

        await fake.post_message(fake.dm_channel, "thanks")
        conversation = engine.store.find_conversation(key)
        assert conversation is not None

        def thanks_recorded() -> bool:
            assert conversation is not None
            return any(t.text == "thanks" for t in engine.store.history(conversation.id))

        await fake.wait_for(thanks_recorded, WAIT, "the thanks recorded")
        await asyncio.sleep(0.3)
        assert len(fake.posts(fake.dm_channel)) == 1  # the bot stays silent
        assert status() == "closed"


async def test_a_check_mark_from_someone_else_resolves_nothing(
    fake: FakeDiscord, engine: Engine
) -> None:
    key = _dm_key(fake)
    async with _running(fake, engine):
        await fake.post_message(fake.dm_channel, QUESTION)
        (answer,) = await fake.wait_for(
            lambda: fake.bot_messages(fake.dm_channel), WAIT, "the answer"
        )
        await fake.react(int(answer["id"]), "✅", user_id=fake.snowflake())
        await fake.react(int(answer["id"]), "🎉")
        await asyncio.sleep(0.3)
    conversation = engine.store.find_conversation(key)
    assert conversation is not None and conversation.status == "open"


async def test_another_person_answering_a_forum_post_within_the_head_start_keeps_the_bot_quiet(
    fake: FakeDiscord, engine: Engine
) -> None:
    mate = fake.snowflake()
    fake.users[mate] = user(mate, "mate")
    policies = PolicyConfig.from_mapping(
        {
            "turn_taking": {"burst_window_seconds": 0.05},
            "channels": {
                f"discord:{fake.forum_channel}": {"turn_taking": {"head_start_seconds": 1.0}}
            },
        },
        "tests",
    )
    quiet_engine = Engine(engine.store, engine.responder, policies=policies)
    async with _running(fake, quiet_engine) as client:
        thread = await fake.post_forum_post("Password", QUESTION)
        key = ConversationKey("discord", str(fake.guild_id), str(fake.forum_channel), str(thread))
        customer = str(fake.customer_id)
        await fake.wait_for(lambda: client.debouncer().pending(key, customer), WAIT, "pending")
        await fake.post_message(
            thread, "Use 'Forgot password' on the sign-in page.", author_id=mate
        )
        await fake.wait_for(lambda: not client.debouncer().pending(key, customer), WAIT, "cancel")
        await asyncio.sleep(1.2)  # past the head start: no answer comes
        assert fake.bot_messages(thread) == []
    conversation = engine.store.find_conversation(key)
    assert conversation is not None
    assert conversation.customer == str(fake.customer_id)
    texts = [turn.text for turn in engine.store.history(conversation.id)]
    assert texts == [QUESTION, "Use 'Forgot password' on the sign-in page."]
