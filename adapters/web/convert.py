"""Pure conversions between the web chat API and the shared model."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from adapters.web.payloads import (
    ActionOut,
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    MessagesResponse,
    RelayedMessageOut,
    ReplyOut,
    SourceOut,
)
from bot.model import FeedbackEvent, FeedbackValue, InboundMessage, Owner, Reply
from bot.relay import RELAY_AUTHOR
from bot.storage.store import OutboxItem

PLATFORM = "web"


def to_message(request: ChatRequest) -> InboundMessage:
    """A web chat request as an inbound message; the conversation id is the channel."""
    return InboundMessage(
        platform=PLATFORM,
        workspace="",
        channel=request.conversation_id,
        user=request.user,
        message_id=request.message_id or uuid.uuid4().hex,
        text=request.text,
        addressed=True,
        raw=request.model_dump(),
    )


def to_response(replies: list[Reply]) -> ChatResponse:
    return ChatResponse(
        replies=[
            ReplyOut(
                id=reply.id,
                text=reply.text,
                kind=reply.kind.value,
                sources=[
                    SourceOut(id=s.id, title=s.title, url=s.url, score=s.score)
                    for s in reply.sources
                ],
                actions=[
                    ActionOut(kind=a.kind.value, label=a.label, value=a.value)
                    for a in reply.actions
                ],
            )
            for reply in replies
        ]
    )


def to_owner(owner: Owner | None) -> Literal["bot", "human"]:
    """The `owner` field of the API: "human" only while a person owns the conversation."""
    return "human" if owner is Owner.HUMAN else "bot"


def to_messages(items: Sequence[OutboxItem], owner: Owner, after: int) -> MessagesResponse:
    """Messages the relay delivered to a web customer, as the page fetches them."""
    return MessagesResponse(
        messages=[
            RelayedMessageOut(
                id=item.id,
                role="bot" if item.author == RELAY_AUTHOR else "agent",
                author=item.author,
                text=item.text,
            )
            for item in items
        ],
        cursor=max((item.id for item in items), default=after),
        owner=to_owner(owner),
    )


def posted_ref(reply: Reply) -> str:
    """The platform reference of a reply handed to the page (see `Engine.attach_platform_ref`)."""
    return f"{PLATFORM}:reply:{reply.id}"


def to_feedback(request: FeedbackRequest) -> FeedbackEvent:
    value = FeedbackValue(request.value) if request.value else None
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=request.reply_id,
        user=request.user,
        value=value,
        event_id=uuid.uuid4().hex,
        reason=request.reason,
    )
