"""The local web chat: a page at `/` and a JSON API, mounted in the bot's web app.

While a person owns a conversation (after a handoff, with a desk configured), the page polls
`GET /api/chat/{conversation_id}/messages?user=...&after=CURSOR` for what the relay delivered to
it (agents' replies, "a person joined"); see `adapters.web.relay`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse

from adapters.web.convert import (
    PLATFORM,
    posted_ref,
    to_feedback,
    to_message,
    to_messages,
    to_owner,
    to_response,
)
from adapters.web.payloads import (
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    FeedbackResponse,
    MessagesResponse,
)
from bot.engine import Engine
from bot.errors import StorageError
from bot.model import ConversationKey, Reply
from bot.outbox import reply_from_stored

logger = logging.getLogger(__name__)


def chat_router(engine: Engine) -> APIRouter:
    """Routes of the web chat, bound to an engine."""
    router = APIRouter()
    page = resources.files("adapters.web").joinpath("static/index.html").read_text("utf-8")

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    def handed_to_page(replies: Sequence[Reply]) -> None:
        """Record the replies as posted: the relay opens a handoff's card only after that."""
        for reply in replies:
            if not reply.id:
                continue
            try:
                engine.attach_platform_ref(reply.id, posted_ref(reply))
            except StorageError:
                logger.warning("web chat: cannot record reply %s as posted", reply.id)

    @router.post("/api/chat")
    def post_chat(request: ChatRequest) -> ChatResponse:
        # A sync route: FastAPI runs it in a worker thread, so the model never blocks the loop.
        message = to_message(request)
        # With the client's message_id, a retried POST is a redelivery: a message whose turn
        # died with its worker is answered now, one answered before gets its stored reply back.
        retried = request.message_id is not None
        replies = engine.handle_burst([message], redelivered=retried)
        if not replies and retried:
            try:
                stored = engine.store.reply_for_message(message.conversation, message.message_id)
            except StorageError:
                stored = None
            if stored is not None:
                replies = [reply_from_stored(stored)]
        handed_to_page(replies)
        try:
            owner = engine.owner_of(message.conversation)
        except StorageError:
            owner = None  # the turn already apologised if the database is down
        return to_response(replies).model_copy(update={"owner": to_owner(owner)})

    @router.get("/api/chat/{conversation_id}/messages")
    def get_messages(
        conversation_id: Annotated[str, Path(min_length=1, max_length=200)],
        user: Annotated[str, Query(min_length=1, max_length=200)],
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> MessagesResponse:
        """What the relay delivered to this conversation's customer after `after`, and who
        answers it now (the page polls while that is "human")."""
        key = ConversationKey(PLATFORM, "", conversation_id)
        try:
            conversation = engine.store.find_conversation(key)
            if conversation is None or conversation.customer != user:
                raise HTTPException(
                    status_code=404,
                    detail="no such conversation for this user: send a message first "
                    "(POST /api/chat) with the same conversation_id and user",
                )
            items = engine.store.relay_delivered(conversation.id, after=after)
        except StorageError as e:
            raise HTTPException(
                status_code=503, detail="the database is unreachable; try again shortly"
            ) from e
        return to_messages(items, conversation.owner, after)

    @router.post("/api/feedback")
    def post_feedback(request: FeedbackRequest) -> FeedbackResponse:
        try:
            # An unknown reply is refused before anything (the event's de-duplication row
            # included) is written: a public route must not store junk from made-up ids.
            if engine.store.get_reply(request.reply_id) is None:
                raise HTTPException(
                    status_code=404,
                    detail=f"no reply {request.reply_id!r}: rate a reply id that /api/chat "
                    "returned",
                )
            outcome = engine.respond_to_feedback(to_feedback(request))
        except StorageError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        handed_to_page(outcome.replies)
        return FeedbackResponse(
            recorded=outcome.recorded, replies=to_response(list(outcome.replies)).replies
        )

    return router
