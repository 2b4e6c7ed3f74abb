"""Pure conversions between the web chat API and the shared model."""

from __future__ import annotations

import uuid

from adapters.web.payloads import (
    ActionOut,
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    ReplyOut,
    SourceOut,
)
from bot.model import FeedbackEvent, FeedbackValue, InboundMessage, Reply

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
