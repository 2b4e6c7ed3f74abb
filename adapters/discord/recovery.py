"""Discord's side of the inbox and the reply outbox (`bot.outbox`).

The gateway neither acknowledges nor redelivers a message, nor Discord a button click: one whose
turn had not finished when its process died is gone unless the process wrote it down first. So
the client records every message it will answer, and every click that speaks for the customer
("Talk to a person", a clarify choice), in the inbox before the turn (`inbox_key`,
`inbox_payload`) and marks it done when the turn ran; `DiscordInbox` answers the ones a dead
process left, and `DiscordReplySender` posts replies stored but never recorded as posted. Both
go through the client's own send path, whose nonces (with ``enforce_nonce``) keep a retried post
from appearing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapters.discord.convert import PLATFORM, Placement
from bot.model import InboundMessage, Reply
from bot.outbox import Destination, inbound_to_json

if TYPE_CHECKING:
    from adapters.discord.client import SupportBotClient

__all__ = [
    "INTERACTION_PREFIX",
    "DiscordInbox",
    "DiscordReplySender",
    "inbox_key",
    "inbox_payload",
]


#: How `convert.button_message` names a click's message: ``interaction:{interaction id}``.
INTERACTION_PREFIX = "interaction:"


def inbox_key(message: InboundMessage) -> str:
    """The inbox's de-duplication key of a gateway message (its id, and the edit's revision)
    or of a button click (``interaction:{id}``, its message id).

    A message delivered twice (a replay after RESUME, the REST catch-up after a lost session,
    both) has one key, so it is answered once; an edit is a new key, as on Slack, where an edit
    is its own event. A click dispatched twice has one key too; it is never edited. Not the
    engine's ``message:`` key: the engine claims that one itself when the turn opens.
    """
    if message.message_id.startswith(INTERACTION_PREFIX):
        return message.message_id
    key = f"gateway:{message.message_id}"
    return f"{key}:{message.revision}" if message.revision else key


def inbox_payload(
    message: InboundMessage, where: Placement, *, reply_to: int | None = None
) -> dict[str, Any]:
    """What the inbox keeps of a Discord message: the message and where its answer goes.

    Args:
        message: the message (or click) to answer.
        where: where its answer goes.
        reply_to: for a click answered as a reply, the bot's message that carried the button:
            a click's own id names no message to reply to. Kept as a string, as Discord writes
            ids (a snowflake overflows a JSON reader's doubles).
    """
    extra: dict[str, Any] = {"placement": where.value}
    if reply_to is not None:
        extra["reply_to"] = str(reply_to)
    return {"message": inbound_to_json(message), "extra": extra}


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
            ValueError: the row names no placement or an unreadable ``reply_to`` (not written
                by `inbox_payload`).
        """
        where = Placement(str(extra.get("placement")))
        # Rows written before clicks went through the inbox have no ``reply_to``.
        raw = extra.get("reply_to")
        reply_to = int(str(raw)) if raw is not None else None
        await self.client.answer_again(message, where, reply_to=reply_to)
