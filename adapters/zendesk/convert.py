"""Zendesk payloads → the shared model, and what to do with each comment (pure functions).

A ticket is a conversation: ``ConversationKey("zendesk", subdomain, "tickets", str(ticket_id))``.
Each public comment is a message; its id is ``comment:{comment_id}``, except the ticket's first
comment, whose id is ``ticket:{ticket_id}:first`` whichever event brings it (``ticket.created``
carries it as the ticket's description, ``ticket.comment_added`` as a comment), so a ticket
subscribed to both events is answered once.

`route` decides, in this order::

    the bot's own comment → IGNORE (echo)
    private note          → IGNORE
    ticket opened for a customer of another platform (external id "supportbot:…"):
        agent comment     → RELAY (to the registered callbacks)
        anything else     → IGNORE
    agent comment         → AGENT (a human owns the ticket from now on)
    customer comment      → HANDOFF when it asks for a person, else ANSWER
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from adapters.zendesk.payloads import (
    COMMENT_ADDED,
    TICKET_CREATED,
    EventEnvelope,
    SatisfactionRating,
    TicketDetail,
)
from bot.model import ConversationKey, FeedbackEvent, FeedbackValue, InboundMessage

__all__ = [
    "CHANNEL",
    "PLATFORM",
    "RELAY_PREFIX",
    "AgentComment",
    "MalformedEvent",
    "Route",
    "TicketComment",
    "asks_for_person",
    "conversation_key",
    "feedback_from_rating",
    "parse_event",
    "relay_external_id",
    "relay_origin",
    "route",
    "to_inbound",
]

PLATFORM = "zendesk"
CHANNEL = "tickets"
#: External ids of tickets the bot opens for customers of other platforms start with this.
RELAY_PREFIX = "supportbot:"

_SPACE = re.compile(r"\s+")
_SCORES = {"good": FeedbackValue.UP, "bad": FeedbackValue.DOWN}


class MalformedEvent(ValueError):
    """A webhook body that is not a ticket event this adapter understands."""


class Route(enum.StrEnum):
    """What the adapter does with a comment."""

    IGNORE = "ignore"
    ANSWER = "answer"
    HANDOFF = "handoff"
    AGENT = "agent"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class TicketComment:
    """A comment on a ticket, from either webhook event.

    Attributes:
        event_id: the webhook event's id.
        event_type: the webhook event's type.
        ticket_id: the ticket.
        message_id: the de-duplication id (see the module docstring).
        comment_id: the comment's id; None when the event is ``ticket.created``.
        author_id: who wrote it.
        author_is_staff: whether the author is an agent or admin; None when unknown.
        author_name: the author's name, where the event carries it.
        public: a public reply (False: an internal note).
        body: the text.
        requester_id: the ticket's requester.
        external_id: the ticket's external id.
        subject: the ticket's subject.
        sent_at: when the event happened.
        raw: the webhook body.
    """

    event_id: str
    event_type: str
    ticket_id: int
    message_id: str
    comment_id: int | None
    author_id: str
    author_is_staff: bool | None
    author_name: str | None
    public: bool
    body: str
    requester_id: str | None
    external_id: str | None
    subject: str | None
    sent_at: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AgentComment:
    """An agent's public comment on a ticket opened for a customer of another platform.

    Attributes:
        ticket_id: the ticket.
        comment_id: the comment.
        origin: the conversation on the other platform the ticket was opened for.
        author_id: the agent's user id.
        author_name: the agent's name, where known.
        text: what the agent wrote.
        sent_at: when.
    """

    ticket_id: int
    comment_id: int | None
    origin: ConversationKey | None
    author_id: str
    author_name: str | None
    text: str
    sent_at: datetime


# Parsing ---------------------------------------------------------------------------------------


def _id(value: Any, what: str) -> int:
    """A Zendesk id, sent as a number or a string of digits."""
    if isinstance(value, bool):
        raise MalformedEvent(f"{what} must be an id, not {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise MalformedEvent(f"{what} must be an id, not {value!r}")


def _optional_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    return None


def _time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_trim_fraction(value))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _trim_fraction(value: str) -> str:
    """Zendesk sends nanoseconds ("…:30.123456789Z"); Python reads at most microseconds."""
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", value)
    if match:
        return f"{match.group(1)}.{match.group(2)[:6]}{match.group(3)}"
    return value


def _normalized(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def parse_event(body: Any) -> TicketComment | None:
    """Read a webhook body.

    Args:
        body: the decoded JSON.

    Returns:
        The comment the event carries, or None for an event of another type (nothing to do).

    Raises:
        MalformedEvent: not an event envelope, or a ticket event without the fields it needs.
    """
    if not isinstance(body, Mapping):
        raise MalformedEvent("the body must be a JSON object")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("the body has no event type")
    if event_type not in (COMMENT_ADDED, TICKET_CREATED):
        return None
    envelope = cast(EventEnvelope, body)
    event_id = envelope.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("the event has no id")
    detail = envelope.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEvent("the event has no ticket detail")
    ticket_id = _id(detail.get("id"), "detail.id")
    sent_at = _time(envelope.get("time"))
    if event_type == TICKET_CREATED:
        return _created(envelope, event_id, ticket_id, detail, sent_at)
    return _comment_added(envelope, event_id, ticket_id, detail, sent_at)


def _created(
    envelope: EventEnvelope,
    event_id: str,
    ticket_id: int,
    detail: TicketDetail,
    sent_at: datetime,
) -> TicketComment:
    description = detail.get("description")
    if not isinstance(description, str):
        raise MalformedEvent("a ticket.created event needs detail.description")
    requester = _optional_text(detail.get("requester_id"))
    submitter = _optional_text(detail.get("submitter_id")) or requester
    if submitter is None:
        raise MalformedEvent("a ticket.created event needs detail.requester_id")
    return TicketComment(
        event_id=event_id,
        event_type=TICKET_CREATED,
        ticket_id=ticket_id,
        message_id=f"ticket:{ticket_id}:first",
        comment_id=None,
        author_id=submitter,
        # The requester opening their own ticket is a customer; an agent opening one on a
        # customer's behalf is not known to be staff here (ticket.comment_added says).
        author_is_staff=False if submitter == requester else None,
        author_name=None,
        public=bool(detail.get("is_public", True)),
        body=description,
        requester_id=requester,
        external_id=_optional_text(detail.get("external_id")),
        subject=_optional_text(detail.get("subject")),
        sent_at=sent_at,
        raw=envelope,
    )


def _comment_added(
    envelope: EventEnvelope,
    event_id: str,
    ticket_id: int,
    detail: TicketDetail,
    sent_at: datetime,
) -> TicketComment:
    event = envelope.get("event")
    comment = event.get("comment") if isinstance(event, Mapping) else None
    if not isinstance(comment, Mapping):
        raise MalformedEvent("a ticket.comment_added event needs event.comment")
    comment_id = _id(comment.get("id"), "event.comment.id")
    author = comment.get("author")
    if not isinstance(author, Mapping):
        raise MalformedEvent("a ticket.comment_added event needs event.comment.author")
    author_id = str(_id(author.get("id"), "event.comment.author.id"))
    body = comment.get("body")
    if not isinstance(body, str):
        raise MalformedEvent("a ticket.comment_added event needs event.comment.body")
    is_staff = author.get("is_staff")
    public = comment.get("is_public")
    description = detail.get("description")
    first = (
        isinstance(description, str)
        and _normalized(description) == _normalized(body)
        and detail.get("created_at") in (None, detail.get("updated_at"))
    )
    return TicketComment(
        event_id=event_id,
        event_type=COMMENT_ADDED,
        ticket_id=ticket_id,
        message_id=f"ticket:{ticket_id}:first" if first else f"comment:{comment_id}",
        comment_id=comment_id,
        author_id=author_id,
        author_is_staff=is_staff if isinstance(is_staff, bool) else None,
        author_name=_optional_text(author.get("name")),
        public=public if isinstance(public, bool) else False,
        body=body,
        requester_id=_optional_text(detail.get("requester_id")),
        external_id=_optional_text(detail.get("external_id")),
        subject=_optional_text(detail.get("subject")),
        sent_at=sent_at,
        raw=envelope,
    )


# Decisions -------------------------------------------------------------------------------------


def asks_for_person(text: str, keywords: Iterable[str]) -> bool:
    """Whether `text` asks for a person: one of `keywords` as whole words, in any case."""
    lowered = _normalized(text).lower()
    for keyword in keywords:
        phrase = _normalized(keyword).lower()
        if phrase and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered):
            return True
    return False


def relay_external_id(origin: ConversationKey) -> str:
    """The external id of a ticket opened for the conversation `origin` on another platform."""
    return f"{RELAY_PREFIX}{origin}"


def relay_origin(external_id: str | None) -> ConversationKey | None:
    """The conversation a relay ticket was opened for, or None when it is no relay ticket."""
    if external_id is None or not external_id.startswith(RELAY_PREFIX):
        return None
    try:
        return ConversationKey.parse(external_id.removeprefix(RELAY_PREFIX))
    except ValueError:
        return None


def route(comment: TicketComment, *, bot_user_id: int, handoff_keywords: Iterable[str]) -> Route:
    """What to do with a comment (see the module docstring for the order)."""
    if comment.author_id == str(bot_user_id):
        return Route.IGNORE
    if not comment.public or not comment.body.strip():
        return Route.IGNORE
    if comment.external_id is not None and comment.external_id.startswith(RELAY_PREFIX):
        return Route.RELAY if comment.author_is_staff else Route.IGNORE
    if comment.author_is_staff is None:
        return Route.IGNORE
    if comment.author_is_staff:
        return Route.AGENT
    if asks_for_person(comment.body, handoff_keywords):
        return Route.HANDOFF
    return Route.ANSWER


# Shared model ----------------------------------------------------------------------------------


def conversation_key(workspace: str, ticket_id: int) -> ConversationKey:
    """The conversation of a ticket."""
    return ConversationKey(PLATFORM, workspace, CHANNEL, str(ticket_id))


def to_inbound(comment: TicketComment, workspace: str) -> InboundMessage:
    """A customer's comment as the engine takes it."""
    key = conversation_key(workspace, comment.ticket_id)
    return InboundMessage(
        platform=PLATFORM,
        workspace=key.workspace,
        channel=key.channel,
        thread=key.thread,
        user=comment.author_id,
        message_id=comment.message_id,
        text=comment.body.strip(),
        addressed=True,
        sent_at=comment.sent_at,
        raw=comment.raw,
    )


def to_agent_comment(comment: TicketComment) -> AgentComment:
    """An agent's comment on a relay ticket, for the relay callbacks."""
    return AgentComment(
        ticket_id=comment.ticket_id,
        comment_id=comment.comment_id,
        origin=relay_origin(comment.external_id),
        author_id=comment.author_id,
        author_name=comment.author_name,
        text=comment.body.strip(),
        sent_at=comment.sent_at,
    )


def feedback_from_rating(
    rating: SatisfactionRating, reply_id: str, workspace: str
) -> FeedbackEvent | None:
    """A satisfaction rating of the account `workspace` as feedback on `reply_id`: good → up,
    bad → down.

    Returns:
        The feedback, or None for a rating that was only offered (no score yet) or is malformed.
    """
    value = _SCORES.get(str(rating.get("score", "")))
    rating_id = rating.get("id")
    requester = rating.get("requester_id")
    if value is None or rating_id is None or requester is None:
        return None
    updated = str(rating.get("updated_at") or rating.get("created_at") or "")
    reason = rating.get("comment") or rating.get("reason") or None
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=str(requester),
        value=value,
        # A changed rating (good → bad) is a new event; the same rating polled again is not.
        event_id=f"satisfaction:{workspace}:{rating_id}:{value.value}:{updated}",
        reason=reason if isinstance(reason, str) else None,
        at=_time(updated) if updated else datetime.now(UTC),
    )
