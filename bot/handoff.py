"""Handing a conversation to a person: what the engine emits, and where it goes.

When a policy decides on a handoff, the engine makes the conversation human-owned (the bot falls
silent there), replies with a `Reply.handoff` message, and gives a `HandoffRequest` to the
`HandoffSink` it was built with. The sink is the seam for whatever brings a person in: the
cross-platform agent relay (a ticket in the agents' desk, a card in the agents' channel) will be
one. The default sink only logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from bot.model import ConversationKey, ReplyKind, Source, Turn, utcnow

__all__ = ["Attempt", "CustomerListener", "HandoffRequest", "HandoffSink", "LoggingHandoffSink"]

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
          handoff message was stored, inside the customer's turn (in the engine's thread).
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
