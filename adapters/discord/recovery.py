"""Discord's side of the inbox and the reply outbox (`bot.outbox`).

The gateway neither acknowledges nor redelivers a message: one whose turn had not finished when
its process died is gone unless the process wrote it down first. So the client records every
message it will answer in the inbox before the turn (`inbox_key`, `inbox_payload`) and marks
it done when the turn ran; `DiscordInbox` answers the ones a dead process left, and
`DiscordReplySender` posts replies stored but never recorded as posted. Both go through the
client's own send path, whose nonces (with ``enforce_nonce``) keep a retried post from
appearing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapters.discord.convert import PLATFORM, Placement
from bot.model import InboundMessage, Reply
from bot.outbox import Destination, inbound_to_json

if TYPE_CHECKING:
    from adapters.discord.client import SupportBotClient

__all__ = ["DiscordInbox", "DiscordReplySender", "inbox_key", "inbox_payload"]


def inbox_key(message: InboundMessage) -> str:
    """The inbox's de-duplication key of a gateway message: its id, and the edit's revision.

    A message delivered twice (a replay after RESUME, the REST catch-up after a lost session,
    both) has one key, so it is answered once; an edit is a new key, as on Slack, where an edit
    is its own event. Not the engine's ``message:`` key: the engine claims that one itself when
    the turn opens.
    """
    key = f"gateway:{message.message_id}"
    return f"{key}:{message.revision}" if message.revision else key


def inbox_payload(message: InboundMessage, where: Placement) -> dict[str, Any]:
    """What the inbox keeps of a Discord message: the message and where its answer goes."""
    return {"message": inbound_to_json(message), "extra": {"placement": where.value}}


class DiscordReplySender:
    """Posts Discord replies stored but never posted (`bot.outbox.ReplySender`), through
    `SupportBotClient.resend_reply`."""

    platform = PLATFORM

    def __init__(self, client: SupportBotClient) -> None:
        self.client = client

    async def resend(self, reply: Reply, destination: Destination) -> str:
        """Post the reply (the nonce returns an earlier copy instead); its platform reference."""
        return await self.client.resend_reply(reply, destination)


class DiscordInbox:
    """Answers Discord messages accepted by a process that died mid-turn
    (`bot.outbox.InboxHandler`), through `SupportBotClient.answer_again`."""

    platform = PLATFORM

    def __init__(self, client: SupportBotClient) -> None:
        self.client = client

    async def redeliver(self, message: InboundMessage, extra: Mapping[str, Any]) -> None:
        """Run the turn for `message` again (a redelivery) and post its replies.

        Raises:
            ValueError: the row names no placement (not written by `inbox_payload`).
        """
        await self.client.answer_again(message, Placement(str(extra.get("placement"))))
