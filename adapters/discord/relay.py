"""Discord's side of the human-handoff relay (`bot.relay`): the agents' channel and customers.

`DiscordDesk` posts handoff cards (an embed with a thread) in the agents' channel and posts
customers' messages in a card's thread; `DiscordCustomerChannel` posts agents' replies where the
customer's conversation is (a DM, a thread, a support channel). `SupportBotClient` registers both
when its engine's handoff sink is a `Relay`, and passes agents' replies to `Relay.agent_said`.

Every relayed message carries a nonce derived from its relay post id (`message_nonce`), which
discord.py sends with ``enforce_nonce``: within Discord's nonce window (a few minutes, longer
than the relay's claim timeout) a message posted again, because its process died before
recording it, comes back as the message already created instead of a second copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from adapters.discord.render import HandoffCard
from bot.handoff import HandoffRequest
from bot.model import ConversationKey

if TYPE_CHECKING:
    from adapters.discord.client import SupportBotClient

__all__ = ["DiscordCustomerChannel", "DiscordDesk", "card_for"]

#: Discord refuses longer messages.
MESSAGE_LIMIT = 2000


def card_for(request: HandoffRequest) -> HandoffCard:
    """The agents' card of a handoff request."""
    tried = request.attempts[-1] if request.attempts else None
    return HandoffCard(
        conversation=request.key,
        customer=request.customer,
        platform=request.platform,
        question=request.question,
        attempts=tuple(a.text for a in request.attempts),
        sources=tried.sources if tried else (),
        transcript=request.transcript,
    )


async def _send(client: SupportBotClient, channel_id: int, text: str, post_id: str) -> str:
    # Imported here: the client module imports this one.
    from adapters.discord.client import message_nonce

    channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        raise TypeError(f"Discord channel {channel_id} cannot take messages")
    message = await channel.send(
        text[:MESSAGE_LIMIT],
        allowed_mentions=discord.AllowedMentions.none(),
        nonce=message_nonce(post_id, 0),
    )
    return str(message.id)


class DiscordDesk:
    """The Discord agents' channel as the relay's desk; card refs are ``"{channel}:{card}"``."""

    def __init__(self, client: SupportBotClient) -> None:
        self.client = client

    async def open_card(self, request: HandoffRequest) -> str:
        return await self.client.post_handoff_card(card_for(request))

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        # The card's message id is also its thread's id. The nonce needs no `retaken`: every
        # try carries it, and Discord hands back the message it already created.
        return await _send(self.client, int(card_ref.split(":", 1)[1]), text, post_id)


class DiscordCustomerChannel:
    """Customers' Discord conversations, seen from the relay."""

    def __init__(self, client: SupportBotClient) -> None:
        self.client = client

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        if key.thread:
            try:
                return await _send(self.client, int(key.thread), text, post_id)
            except discord.NotFound:
                pass  # a question in a channel that never got a thread: answer in the channel
        return await _send(self.client, int(key.channel), text, post_id)
