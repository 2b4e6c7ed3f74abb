"""Handing a conversation to a person: what the engine emits, and where it goes.

When a policy decides on a handoff, the engine makes the conversation human-owned (the bot falls
silent there), replies with a `Reply.handoff` message, and gives a `HandoffRequest` to the
`HandoffSink` it was built with. The sink is the seam for whatever brings a person in: the
cross-platform agent relay (`bot.relay`: a ticket in the agents' desk, a card in the agents'
channel) is one.

A sink that may have nobody to bring in says so (`DeskCoverage`): with no agents' desk configured,
`build_services` uses `NoDeskHandoffSink`, and the engine then tells the customer how to reach a
person instead (the configured contact), keeps the conversation with the bot and records the
request for monitoring (a `handoff` row from bot to bot, reason ``no_desk:<reason>``). The
engine's own default, `LoggingHandoffSink`, only logs (and hands over as usual).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

from bot.model import ConversationKey, ReplyKind, Source, Turn, utcnow

__all__ = [
    "DESK_PLATFORMS",
    "NO_DESK_TEXT",
    "Attempt",
    "CustomerListener",
    "DeskCoverage",
    "HandoffRequest",
    "HandoffSink",
    "LoggingHandoffSink",
    "NoDeskHandoffSink",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One thing the bot tried before handing over: a reply and what it drew on."""

    text: str
    kind: ReplyKind
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class HandoffRequest:
    """A conversation the bot hands to a person, with what the person needs to pick it up.

    Attributes:
        conversation_id: the storage id of the conversation.
        key: where the conversation happens (platform, workspace, channel, thread).
        customer: the customer's platform user id.
        platform: the customer's platform (`key.platform`).
        question: the customer's question: the turn's text, or when the turn only asked for a
            person, the question before it.
        reason: why ("customer_request:human", "topic:legal", "repeated_misses:2", …; the part
            before ":" is a `policies.state.HandoffReason`).
        attempts: the bot's recent replies, oldest first, with their sources.
        sentiment: the VADER compound score (-1 … 1) of the customer's turn.
        transcript: the conversation so far, oldest first, ending with the handoff message.
        reply_id: the stored id of the handoff message.
        requested_at: when the handoff happened (aware UTC).
    """

    conversation_id: str
    key: ConversationKey
    customer: str
    platform: str
    question: str
    reason: str
    attempts: tuple[Attempt, ...] = ()
    sentiment: float = 0.0
    transcript: tuple[Turn, ...] = ()
    reply_id: str = ""
    requested_at: datetime = field(default_factory=utcnow)


@runtime_checkable
class HandoffSink(Protocol):
    """Receives the engine's handoff requests.

    Contract:
        * `request` is called once per handoff, after the conversation became human-owned and the
          handoff message was stored, inside the customer's turn (in the engine's thread). For a
          sink that said nobody would pick it up (`DeskCoverage`), the conversation stays with
          the bot and the message stored is the sink's no-desk reply.
        * It SHOULD return quickly: queue slow work (HTTP calls to a helpdesk) rather than do it.
        * An exception is logged by the engine and does not undo the handoff: the customer has
          already been told a person will reply, so a sink that can fail should retry on its own.
    """

    def request(self, handoff: HandoffRequest) -> None:
        """Bring a person into the conversation (or queue that)."""


@runtime_checkable
class CustomerListener(Protocol):
    """A sink that also hears the customer while the conversation is human-owned (the relay).

    Contract:
        * The engine calls `customer_said` for each new message by the conversation's customer
          while a person owns it, after the message was stored, in the engine's thread.
        * It SHOULD return quickly and MUST tolerate a repeated `message_id` (it de-duplicates).
    """

    def customer_said(self, key: ConversationKey, text: str, message_id: str) -> bool:
        """Pass a customer's message on to the person; True if it was."""


class LoggingHandoffSink:
    """The default sink: logs each handoff (without customer text) and does nothing else."""

    def request(self, handoff: HandoffRequest) -> None:
        logger.info(
            "handoff requested conversation=%s platform=%s reason=%s attempts=%d",
            handoff.conversation_id,
            handoff.platform,
            handoff.reason,
            len(handoff.attempts),
        )


@runtime_checkable
class DeskCoverage(Protocol):
    """A sink that knows whether a person will pick up a handoff at all.

    Contract:
        * The engine calls `no_desk_reply` in the customer's turn when a policy decides on a
          handoff, before anything changes. None: a person picks it up, hand over as usual.
          A text: nobody will; the engine replies with that text (still a handoff reply),
          keeps the conversation with the bot, records the request as a `handoff` row from
          bot to bot with the reason ``no_desk:<reason>``, then calls `request` as usual.
        * It MUST be quick and SHOULD NOT raise (an exception counts as "a person picks it up").
        * Sinks without it are taken to bring a person.
    """

    def no_desk_reply(self, key: ConversationKey) -> str | None:
        """None when a person picks up a handoff at `key`, else what to tell the customer."""


#: Platforms whose conversations already sit in an agents' desk: a Zendesk ticket is one (its
#: agents see and answer it there, and the Zendesk adapter hands the ticket over on the engine's
#: handoff reply), so a handoff there needs no other desk.
DESK_PLATFORMS: Final[frozenset[str]] = frozenset({"zendesk"})

#: What `NoDeskHandoffSink` tells the customer; ``{contact}`` is `SUPPORTBOT_HANDOFF_CONTACT`.
NO_DESK_TEXT: Final = (
    "Nobody from our support team can join this chat, so I can't hand you over here. To reach a "
    "person, you can {contact}. Meanwhile, I'm still here to help."
)


class NoDeskHandoffSink:
    """The sink when no agents' desk is configured (``SUPPORTBOT_HANDOFF_DESK`` unset).

    Nobody would pick a handoff up, so the customer is not told a person will reply: the engine
    gives them `text` with the configured contact instead and the bot keeps answering
    (`DeskCoverage`). Conversations on `desk_platforms` are in a desk already (a Zendesk ticket)
    and are handed over as usual.

    Args:
        contact: completes "you can ..." (e.g. "email help@yourcompany.com").
        text: the reply; ``{contact}`` is replaced by `contact`.
        desk_platforms: platforms whose conversations agents already see.
    """

    def __init__(
        self,
        contact: str,
        *,
        text: str = NO_DESK_TEXT,
        desk_platforms: frozenset[str] = DESK_PLATFORMS,
    ) -> None:
        # Replaced, not str.format: a contact with braces must not break the text.
        self.reply_text = text.replace("{contact}", contact.strip())
        self.desk_platforms = desk_platforms

    def no_desk_reply(self, key: ConversationKey) -> str | None:
        return None if key.platform in self.desk_platforms else self.reply_text

    def request(self, handoff: HandoffRequest) -> None:
        staffed = handoff.platform in self.desk_platforms
        logger.info(
            "handoff requested conversation=%s platform=%s reason=%s attempts=%d desk=%s",
            handoff.conversation_id,
            handoff.platform,
            handoff.reason,
            len(handoff.attempts),
            handoff.platform if staffed else "none (the customer was given the contact)",
        )
