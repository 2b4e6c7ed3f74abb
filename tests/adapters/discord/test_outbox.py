"""Discord replies stored but never posted (`bot.outbox`), against the fake Discord.

The real discord.py client re-sends with the first try's nonce and ``enforce_nonce``, so a
message the dead process had created comes back instead of a second copy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from adapters.discord.client import SupportBotClient, message_nonce
from adapters.discord.convert import DM_WORKSPACE
from adapters.discord.recovery import DiscordReplySender
from bot.engine import Engine
from bot.model import ConversationKey, Reply, Role
from bot.outbox import Destination, Sweeper
from tests.adapters.discord.fake_discord import FakeDiscord


def _stored_reply(engine: Engine, channel: int, text: str) -> tuple[str, Destination]:
    """A DM reply stored by a process that died before recording it as posted."""
    store = engine.store
    key = ConversationKey("discord", DM_WORKSPACE, str(channel))
    conversation = store.get_or_create_conversation(key, "42")
    row = store.add_message(conversation.id, Role.USER, "42", "How do I export?", "q")
    reply = Reply.answer(text, ())
    destination = Destination("discord", key.workspace, key.channel, "", "q", reply.actions)
    reply_id = store.add_reply(
        conversation.id, row, reply, destination=destination.to_json(), hold_s=-1
    )
    return reply_id, destination


async def test_a_stored_reply_is_posted_once(
    fake: FakeDiscord,
    engine: Engine,
    bot: Callable[..., AbstractAsyncContextManager[SupportBotClient]],
) -> None:
    async with bot() as client:
        # The client's own sweeper would race this test's for the stored replies: stop it.
        assert client._sweep_task is not None
        client._sweep_task.cancel()
        sweeper = Sweeper(engine.store, hold_s=30)
        sweeper.add_sender(DiscordReplySender(client))

        unsent, _ = _stored_reply(engine, fake.dm_channel, "Use File, then Export.")
        assert (await sweeper.sweep()).resent == 1
        (posted,) = fake.bot_messages(fake.dm_channel)
        info = engine.store.get_reply(unsent)
        assert info is not None
        assert info.platform_ref == f"{fake.dm_channel}:{posted['id']}"
        assert posted.get("components")  # the 👍/👎 buttons came back

        # The dead process had posted the next one (same nonce) but never recorded it.
        posted_before, destination = _stored_reply(engine, fake.dm_channel, "Use the menu.")
        channel = await client.fetch_channel(fake.dm_channel)
        # discord.py sends `enforce_nonce` with every nonce.
        first = await channel.send(  # type: ignore[union-attr]
            "Use the menu.", nonce=message_nonce(posted_before, 0)
        )
        assert len(fake.bot_messages(fake.dm_channel)) == 2
        assert (await sweeper.sweep()).resent == 1
        assert len(fake.bot_messages(fake.dm_channel)) == 2
        again = engine.store.get_reply(posted_before)
        assert again is not None and again.platform_ref == f"{fake.dm_channel}:{first.id}"
        assert destination.channel == str(fake.dm_channel)
        assert not await sweeper.sweep()
