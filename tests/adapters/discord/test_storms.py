"""Discord answering 429 and 5xx storms: customers keep writing, every message is answered once.

The fake Discord answers message posts with 429 (Discord's body and headers), 500 (creating the
message first, so the bot is told it failed though it exists), 502 and 503 in turn for a few
seconds. discord.py retries some of these itself; the client retries the rest with the same
``nonce`` (``enforce_nonce``), so Discord hands back a message that already exists. Afterwards
every customer message has exactly one reply in the database and exactly one message on Discord.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from adapters.discord.client import SupportBotClient
from bot.engine import Engine
from bot.model import ConversationKey
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.exactly_once import (
    distinct_questions,
    replies_per_message,
    unanswered_or_twice,
    unposted_replies,
    wait_until,
)

CUSTOMERS = 3
MESSAGES_EACH = 2


async def _customer(
    fake: FakeDiscord, engine: Engine, number: int, questions: list[str]
) -> list[str]:
    """DM the bot one question after another, each once the previous one's answer is stored."""
    user_id, channel = fake.add_customer(f"storm{number}")
    key = ConversationKey("discord", "@me", str(channel))
    sent = []
    for text in questions:
        message_id = str(await fake.post_message(channel, text, author_id=user_id))
        sent.append(message_id)
        await wait_until(
            functools.partial(engine.store.reply_for_message, key, message_id),
            90,
            f"a reply to {message_id}",
        )
    return sent


async def test_every_message_is_answered_once_through_a_storm(
    fake: FakeDiscord,
    engine: Engine,
    bot: Callable[..., AbstractAsyncContextManager[SupportBotClient]],
) -> None:
    async with bot():
        # Counted in requests, not seconds, so the storm is met however slow the machine.
        storm = fake.storm(statuses=(429, 500, 502, 503), requests=8, seconds=60.0, retry_after=0.3)
        questions = distinct_questions(CUSTOMERS * MESSAGES_EACH)
        sent_lists = await asyncio.gather(
            *(
                _customer(fake, engine, c, questions[c * MESSAGES_EACH : (c + 1) * MESSAGES_EACH])
                for c in range(CUSTOMERS)
            )
        )
        sent = [message_id for sent_list in sent_lists for message_id in sent_list]

        def all_posted() -> bool:
            counts = replies_per_message(engine.store.engine, "discord")
            done = all(counts.get(m) == 1 for m in sent)
            return done and not unposted_replies(engine.store.engine, "discord")

        await fake.wait_for(all_posted, 120, "every reply posted")
        fake.calm()

    assert set(fake.storm_answers) == {429, 500, 502, 503}, fake.storm_answers
    assert storm.answered == 8  # every error was met: posts succeed only after the storm
    counts = replies_per_message(engine.store.engine, "discord")
    assert unanswered_or_twice(counts, sent) == {}
    # On Discord: the bot's messages in the customers' DMs, one per reply, none twice.
    channels = {
        int(c["id"])
        for c in fake.channels.values()
        if c.get("recipients") and c["id"] != str(fake.dm_channel)
    }
    bot_messages = [m for channel in channels for m in fake.bot_messages(channel)]
    assert len(bot_messages) == len(sent)
    nonces = Counter(m.get("nonce") for m in bot_messages)
    assert set(nonces.values()) == {1}, nonces
