"""Zendesk's wire shapes, as the adapter reads and writes them.

Webhook bodies are those of a webhook subscribed to Zendesk *events* (Admin Center → Webhooks →
"Zendesk events"): a fixed envelope ``{"type": "zen:event-type:…", "id", "time", "account_id",
"subject": "zen:ticket:{id}", "detail": {ticket}, "event": {…}}``. Ids in ``detail`` arrive as
strings, ids in ``event`` as numbers or strings; `convert` accepts both.

API shapes follow the Support API (``/api/v2/tickets``, ``/api/v2/satisfaction_ratings``) and the
Help Center API (``/api/v2/help_center/articles``). Only the fields the adapter uses are listed.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "Article",
    "ArticlesPage",
    "Audit",
    "AuditEvent",
    "CommentAuthor",
    "CommentEvent",
    "CommentWrite",
    "CursorLinks",
    "CursorMeta",
    "EventEnvelope",
    "SatisfactionRating",
    "SatisfactionRatingsPage",
    "TicketCreate",
    "TicketDetail",
    "TicketResponse",
    "TicketUpdate",
    "TicketVia",
]

COMMENT_ADDED = "zen:event-type:ticket.comment_added"
TICKET_CREATED = "zen:event-type:ticket.created"


# Webhook events --------------------------------------------------------------------------------


class TicketVia(TypedDict, total=False):
    channel: str


class TicketDetail(TypedDict, total=False):
    """The ``detail`` of a ticket event: the ticket after the change."""

    id: str
    actor_id: str
    assignee_id: str | None
    brand_id: str
    created_at: str
    updated_at: str
    description: str
    external_id: str | None
    group_id: str | None
    is_public: bool
    organization_id: str | None
    priority: str | None
    requester_id: str
    status: str
    subject: str
    submitter_id: str
    tags: list[str]
    type: str | None
    via: TicketVia


class CommentAuthor(TypedDict, total=False):
    id: int | str
    is_staff: bool
    name: str


class CommentEvent(TypedDict, total=False):
    """``event.comment`` of ``zen:event-type:ticket.comment_added``."""

    id: int | str
    body: str
    is_public: bool
    author: CommentAuthor


class _CommentAddedEvent(TypedDict, total=False):
    comment: CommentEvent


class EventEnvelope(TypedDict):
    """What a webhook subscribed to Zendesk events posts."""

    type: str
    id: str
    detail: TicketDetail
    account_id: NotRequired[int]
    subject: NotRequired[str]
    time: NotRequired[str]
    zendesk_event_version: NotRequired[str]
    event: NotRequired[_CommentAddedEvent]


# Tickets API -----------------------------------------------------------------------------------


class CommentWrite(TypedDict):
    """A comment as the Tickets API takes it (in ``ticket.comment``)."""

    html_body: str
    public: bool
    author_id: NotRequired[int]


class TicketUpdate(TypedDict, total=False):
    """The ``ticket`` object of ``PUT /api/v2/tickets/{id}.json``."""

    comment: CommentWrite
    status: str
    group_id: int
    additional_tags: list[str]


class TicketCreate(TypedDict, total=False):
    """The ``ticket`` object of ``POST /api/v2/tickets.json``."""

    subject: str
    comment: CommentWrite
    requester_id: int
    submitter_id: int
    external_id: str
    tags: list[str]
    group_id: int
    status: str


class AuditEvent(TypedDict, total=False):
    id: int
    type: str
    public: bool
    author_id: int


class Audit(TypedDict, total=False):
    id: int
    ticket_id: int
    events: list[AuditEvent]


class _Ticket(TypedDict, total=False):
    id: int
    status: str
    external_id: str | None
    tags: list[str]


class TicketResponse(TypedDict, total=False):
    """What creating or updating a ticket answers: the ticket and the audit of the change."""

    ticket: _Ticket
    audit: Audit


# Pagination ------------------------------------------------------------------------------------


class CursorMeta(TypedDict, total=False):
    has_more: bool
    after_cursor: str | None
    before_cursor: str | None


class CursorLinks(TypedDict, total=False):
    next: str | None
    prev: str | None


# Satisfaction ratings --------------------------------------------------------------------------


class SatisfactionRating(TypedDict, total=False):
    """One legacy CSAT rating (``/api/v2/satisfaction_ratings``)."""

    id: int
    ticket_id: int
    requester_id: int
    score: str  # "offered", "unoffered", "good" or "bad"
    comment: str | None
    reason: str | None
    created_at: str
    updated_at: str


class SatisfactionRatingsPage(TypedDict, total=False):
    satisfaction_ratings: list[SatisfactionRating]
    meta: CursorMeta
    links: CursorLinks
    next_page: str | None


# Help Center -----------------------------------------------------------------------------------


class Article(TypedDict, total=False):
    """One Help Center article (``/api/v2/help_center/articles``)."""

    id: int
    title: str
    body: str | None
    html_url: str
    locale: str
    draft: bool
    label_names: list[str]
    updated_at: str
    section_id: int


class ArticlesPage(TypedDict, total=False):
    """A page of articles: cursor pagination (``meta``/``links``) or offset (``next_page``)."""

    articles: list[Article]
    meta: CursorMeta
    links: CursorLinks
    next_page: str | None
    page: int
    page_count: int
    count: int
