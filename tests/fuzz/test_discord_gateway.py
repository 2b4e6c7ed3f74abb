"""Discord under hostile messages, end to end: the real discord.py client parses gateway
MESSAGE_CREATE payloads from the local fake Discord and the bot answers each one politely."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adapters.discord.conftest import WAIT, bot, engine, fake, services
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.fuzz.strategies import ODD_CHARACTERS, ZALGO

__all__ = ["bot", "engine", "fake", "services"]

pytestmark = pytest.mark.model

HOSTILE = [
    "\x00\x00 how do I export?",
    "\ud800 lone surrogate \udfff",
    "\u202eteser drowssap\u202c",
    ZALGO[:1500],
    "".join(ODD_CHARACTERS) * 10,
    "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 300,
    "x" * 4500,
    "<@0> <@&0> <#0> @everyone",
]


async def test_hostile_direct_messages_each_get_one_polite_answer(
    fake: FakeDiscord, bot: Any
) -> None:
    async with bot() as client:
        for n, text in enumerate(HOSTILE, start=1):
            await fake.post_message(fake.dm_channel, text)
            messages = await fake.wait_for(
                lambda n=n: (
                    len(fake.bot_messages(fake.dm_channel)) >= n
                    and fake.bot_messages(fake.dm_channel)
                ),
                WAIT,
                f"an answer to hostile message {n}",
            )
            assert messages[-1]["content"].strip()
        assert client.is_ready() and not client.is_closed()
    replies = [m["content"] for m in fake.bot_messages(fake.dm_channel)]
    assert len(replies) == len(HOSTILE)
    assert "too long" in replies[HOSTILE.index("x" * 4500)]
