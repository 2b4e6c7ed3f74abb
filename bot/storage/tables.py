"""SQLModel table models: the database schema of the bot.

Every timestamp is stored as an aware UTC datetime (`UTCDateTime`), so SQLite, which keeps no
time zone, and PostgreSQL, which converts to the session's zone, read back the same value.

The tables live in their own `MetaData` (`metadata`), apart from `SQLModel.metadata`, so that
other SQLModel classes in the process never leak into the migrations or the schema checks. The
Alembic migrations in `bot.storage.migrations` create exactly these tables; a test checks that
the two agree.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Index,
    LargeBinary,
    MetaData,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from bot.model import utcnow

__all__ = [
    "NAMING_CONVENTION",
    "TABLE_NAMES",
    "CompositionLog",
    "Conversation",
    "Feedback",
    "Handoff",
    "InboxItem",
    "Installation",
    "KbProposal",
    "Lease",
    "Message",
    "OAuthState",
    "ProcessedEvent",
    "RelayLink",
    "RelayOutbox",
    "ReplyRecord",
    "ReviewItem",
    "StorageModel",
    "UTCDateTime",
    "metadata",
    "new_id",
]

logger = logging.getLogger(__name__)


def new_id() -> str:
    """A fresh random identifier: 32 hex digits of a uuid4."""
    return uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always reads back as an aware UTC datetime.

    Naive datetimes are taken to be UTC already. SQLite stores the UTC value without a zone; it
    is made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC before storing; drop the zone where the database keeps none."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        else:
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the database gave back."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, so that later migrations (SQLite batch mode included) can refer to them."""


class StorageModel(
    SQLModel, registry=registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))
):
    """Base of the storage tables, with a `MetaData` of its own."""


metadata: MetaData = StorageModel.metadata


class Conversation(StorageModel, table=True):
    """One conversation: a thread, a DM or a web-chat session on one platform."""

    __tablename__ = "conversation"

    id: str = Field(default_factory=new_id, primary_key=True)
    key: str = Field(unique=True, index=True)
    platform: str
    workspace: str
    channel: str
    thread: str
    customer: str
    owner: str = Field(default="bot")
    status: str = Field(default="open")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The embedded context the next message would be searched with, kept by the worker that
    # answered the last one (`Store.keep_context`) for whichever worker answers the next: the
    # last customer message it follows (a row id), its key (text and model) and the vector.
    context_row: int | None = None
    context_key: str | None = None
    context_vector: bytes | None = Field(default=None, sa_type=LargeBinary)


class Message(StorageModel, table=True):
    """One line of a conversation: from the customer ("user"), the bot or a human agent."""

    __tablename__ = "message"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    role: str
    author: str
    text: str = Field(sa_type=Text)
    platform_message_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReplyRecord(StorageModel, table=True):
    """A reply the bot gave, with what it drew on and how sure it was."""

    __tablename__ = "reply"
    __table_args__ = (Index("ix_reply_delivery", "delivery", "claimed_until"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", ondelete="SET NULL")
    kind: str
    text: str = Field(sa_type=Text)
    confidence: float | None = None
    sources: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    query: str = Field(default="", sa_type=Text)
    latency_ms: float | None = None
    platform_ref: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The outbox (`bot.outbox`): where the reply goes and whether it got there. A reply with a
    # `destination` is stored "pending" and held by the storing process until `claimed_until`;
    # after that a sweeper may claim it and send it again (once), see docs/reliability.md.
    destination: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    delivery: str = "sent"
    attempts: int = 0
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class InboxItem(StorageModel, table=True):
    """An inbound platform message accepted (acknowledged) but maybe not answered yet.

    Written before the platform gets its acknowledgement; `status` is "pending" until the turn
    ran, then "done". A pending row whose `claimed_until` passed belongs to a process that died
    or stalled: a sweeper claims it and runs the turn again (`bot.outbox`). `payload` is the
    `InboundMessage` as JSON plus what the adapter needs to answer it.
    """

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("platform", "dedupe_key", name="uq_inbox_platform_dedupe_key"),
        Index("ix_inbox_pending", "status", "claimed_until"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str
    dedupe_key: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = "pending"
    attempts: int = 0
    claimed_until: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Feedback(StorageModel, table=True):
    """One user's rating of one reply; a repeated rating updates the row."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("reply_id", "user", name="uq_feedback_reply_user"),)

    id: int | None = Field(default=None, primary_key=True)
    reply_id: str = Field(foreign_key="reply.id", ondelete="CASCADE", index=True)
    platform: str
    user: str
    value: str
    reason: str | None = Field(default=None, sa_type=Text)
    event_id: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Handoff(StorageModel, table=True):
    """A change of a conversation's owner, bot to human or back."""

    __tablename__ = "handoff"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    from_owner: str
    to_owner: str
    actor: str
    reason: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ProcessedEvent(StorageModel, table=True):
    """An inbound platform event already handled; the unique pair de-duplicates deliveries."""

    __tablename__ = "processed_event"
    __table_args__ = (
        UniqueConstraint("platform", "event_id", name="uq_processed_event_platform_event"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str
    event_id: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Installation(StorageModel, table=True):
    """A platform app installed into a workspace through OAuth; the newest row wins.

    `data` is the platform SDK's own record (tokens included), kept as JSON so the SDK can rebuild
    it; "" stands for an absent enterprise, team or user id.
    """

    __tablename__ = "installation"
    __table_args__ = (
        Index("ix_installation_workspace", "platform", "client_id", "enterprise_id", "team_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str
    client_id: str
    enterprise_id: str = ""
    team_id: str = ""
    user_id: str = ""
    has_bot: bool = False
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    installed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OAuthState(StorageModel, table=True):
    """A one-time OAuth `state` value handed out with an install link, until it expires."""

    __tablename__ = "oauth_state"

    state: str = Field(primary_key=True)
    platform: str
    expires_at: datetime = Field(sa_type=UTCDateTime)


class Lease(StorageModel, table=True):
    """A named lease held by one process at a time until `expires_at` (e.g. a Socket Mode link)."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True)
    holder: str
    expires_at: datetime = Field(sa_type=UTCDateTime)


class RelayLink(StorageModel, table=True):
    """A handed-over conversation and the agents' card it is relayed to (one per conversation).

    `state` is "waiting" (nobody claimed it yet), "claimed", "resolved" or "released"; `card_ref`
    is None until the desk opened the card (an ``opening:`` token while a process opens it, since
    `opening_at`). `request` keeps what the card shows, so that the process serving the desk can
    open it.
    """

    __tablename__ = "relay_link"
    __table_args__ = (Index("ix_relay_link_card_ref", "card_ref"),)

    conversation_id: str = Field(
        foreign_key="conversation.id", ondelete="CASCADE", primary_key=True
    )
    desk: str
    card_ref: str | None = None
    state: str = "waiting"
    claimed_by: str | None = None
    request: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deadline: datetime = Field(sa_type=UTCDateTime)
    #: When a process took the card's opening (`card_ref` holds its token); None otherwise.
    opening_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RelayOutbox(StorageModel, table=True):
    """A message the relay will post (or posted) on a platform; `origin_key` de-duplicates.

    A message whose posting failed keeps its back-off here rather than in a process, so every
    process sharing the database waits for the same `next_attempt_at` and a restart remembers
    it: `attempts` counts the failed posts (kept once it is sent, as a record), and a pending
    row is not claimed before `next_attempt_at` (None: at once).

    A process claims a row before posting it: status "posting" with `claimed_at`, then "sent"
    with `sent_at` once posted. A "posting" row whose `claimed_at` is older than the relay's
    claim timeout belongs to a process that died while posting: another process takes it
    again, and first looks on the platform for the copy the dead one may have posted.
    """

    __tablename__ = "relay_outbox"
    __table_args__ = (
        UniqueConstraint("origin_key", name="uq_relay_outbox_origin_key"),
        Index("ix_relay_outbox_pending", "target_platform", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE")
    direction: str
    target_platform: str
    target_ref: str
    text: str = Field(sa_type=Text)
    author: str
    origin_key: str
    status: str = "pending"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReviewItem(StorageModel, table=True):
    """A reply in the review queue: sampled for review and/or flagged by the QA pass.

    One row per reply. `sampled` says the reply was drawn for review; `violations` lists the QA
    guideline breaches found (``[{"rule": ..., "detail": ...}]``). `verdict` is None until a
    reviewer marks the reply "right" or "wrong"; `expected_entry` is the knowledge-base entry the
    reviewer says should have answered, if they name one.
    """

    __tablename__ = "review_item"
    __table_args__ = (
        UniqueConstraint("reply_id", name="uq_review_item_reply_id"),
        Index("ix_review_item_verdict", "verdict"),
    )

    id: int | None = Field(default=None, primary_key=True)
    reply_id: str = Field(foreign_key="reply.id", ondelete="CASCADE")
    sampled: bool = False
    violations: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    verdict: str | None = None
    note: str | None = Field(default=None, sa_type=Text)
    expected_entry: str | None = None
    reviewer: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class KbProposal(StorageModel, table=True):
    """A knowledge-base entry proposed from an agent's answer in a resolved handoff.

    `status` is "proposed" until a person approves it (it is then added to the knowledge base as
    `entry_id`) or rejects it. `fingerprint` (a hash of the normalized question and answer)
    keeps re-mining the same conversations from proposing the same entry twice. `nearest_entry`
    and `nearest_score` name the closest existing entry the proposal was checked against.
    """

    __tablename__ = "kb_proposal"
    __table_args__ = (
        UniqueConstraint("fingerprint", name="uq_kb_proposal_fingerprint"),
        Index("ix_kb_proposal_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str | None = Field(
        default=None, foreign_key="conversation.id", ondelete="SET NULL"
    )
    question: str = Field(sa_type=Text)
    answer: str = Field(sa_type=Text)
    examples: list[str] = Field(default_factory=list, sa_type=JSON)
    fingerprint: str
    status: str = "proposed"
    nearest_entry: str | None = None
    nearest_score: float | None = None
    entry_id: str | None = None
    reviewer: str | None = None
    note: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CompositionLog(StorageModel, table=True):
    """How a generated answer went, for error analysis (one row per composed reply).

    `outcome` is "generated" (the model's answer went out) or "fell_back" (the extractive answer
    went out instead; `reason` says why: "timeout", "http_500", "malformed", "unsupported", ...).
    `generated` keeps the model's answer, `support` the grounding guard's per-sentence scores
    (``[{"sentence", "similarity", "overlap", "missing_numbers", "checked", "supported"}]``).
    """

    __tablename__ = "composition"
    __table_args__ = (Index("ix_composition_outcome", "outcome"),)

    id: int | None = Field(default=None, primary_key=True)
    reply_id: str = Field(foreign_key="reply.id", ondelete="CASCADE", index=True)
    composer: str
    outcome: str
    reason: str = ""
    model: str = ""
    prompt_version: str = ""
    generated: str | None = Field(default=None, sa_type=Text)
    support: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    latency_ms: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


TABLE_NAMES: tuple[str, ...] = tuple(metadata.tables)
