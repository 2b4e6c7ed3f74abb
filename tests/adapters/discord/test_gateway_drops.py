"""Dropped gateway connections: every message written before, during and after the drop is
answered exactly once.

The fake gateway drops the connection mid-run and keeps the client away while customers write:
an abrupt cut (the client sees 1006) or close code 4000, after which discord.py RESUMEs and the
fake replays what it missed (plus an at-least-once repeat of an answered message); or a session
that ends (close code 4009, INVALID_SESSION), after which the client IDENTIFYs afresh, Discord
replays nothing, and the client reads what it missed over REST.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from adapters.discord.client import SupportBotClient
from bot.engine import Engine
from tests.adapters.discord.conftest import WAIT
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.exactly_once import (
    distinct_questions,
    replies_per_message,
    unanswered_or_twice,
    unposted_replies,
)

#: (how the connection drops, whether the session survives it)
DROPS = {
    "abrupt-1006": (None, False, True),
    "close-4000": (4000, False, True),
    "close-4009": (4009, False, False),
    "invalid-session": (None, True, False),
}


@pytest.mark.parametrize("drop", list(DROPS))
async def test_messages_around_a_dropped_gateway_are_answered_once(
    drop: str,
    fake: FakeDiscord,
    engine: Engine,
    bot: Callable[..., AbstractAsyncContextManager[SupportBotClient]],
) -> None:
    code, invalid_session, resumable = DROPS[drop]
    questions = iter(distinct_questions(5))
    sent: list[int] = []

    def settled() -> bool:
        counts = replies_per_message(engine.store.engine, "discord")
        return all(counts.get(str(m)) == 1 for m in sent) and not unposted_replies(
            engine.store.engine, "discord"
        )

    async with bot():
        sent.append(await fake.post_message(fake.dm_channel, next(questions)))
        await fake.wait_for(settled, WAIT * 3, "the first answer")

        fake.accepting.clear()  # the client cannot reconnect until the customers have written
        if invalid_session:
            await fake.invalidate_session()
        else:
            await fake.drop(code)
        sent.append(await fake.post_message(fake.dm_channel, next(questions)))
        sent.append(await fake.post_message(fake.support_channel, next(questions)))
        if resumable:
            fake.duplicate_on_resume = [sent[0]]  # at-least-once: an answered message again
        fake.accepting.set()
        await fake.wait_for(fake.connected.is_set, WAIT * 3, "the client back on the gateway")
        # What was missed is answered before the next question (which would otherwise join
        # the replayed one in a burst, answered once by design).
        await fake.wait_for(settled, WAIT * 6, "the missed messages answered")

        sent.append(await fake.post_message(fake.dm_channel, next(questions)))
        try:
            await fake.wait_for(settled, WAIT * 6, "every message answered")
        except AssertionError as e:
            counts = replies_per_message(engine.store.engine, "discord")
            raise AssertionError(
                f"{e}: replies per message {counts}, sent {sent}, "
                f"identifies {fake.identifies}, resumes {fake.resumes}, "
                f"unposted {unposted_replies(engine.store.engine, 'discord')}"
            ) from e

    if resumable:
        assert (fake.identifies, fake.resumes) == (1, 1)
    else:
        assert fake.identifies == 2
    counts = replies_per_message(engine.store.engine, "discord")
    assert unanswered_or_twice(counts, [str(m) for m in sent]) == {}
    assert len(counts) == len(sent)
    bot_messages = [m for m in fake.messages.values() if m["author"]["id"] == str(fake.bot_id)]
    assert len(bot_messages) == len(sent), [m["content"][:40] for m in bot_messages]
