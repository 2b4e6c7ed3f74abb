"""The local web chat: a page at `/` and a JSON API, mounted in the bot's web app."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from adapters.web.convert import to_feedback, to_message, to_response
from adapters.web.payloads import ChatRequest, ChatResponse, FeedbackRequest, FeedbackResponse
from bot.engine import Engine
from bot.errors import StorageError


def chat_router(engine: Engine) -> APIRouter:
    """Routes of the web chat, bound to an engine."""
    router = APIRouter()
    page = resources.files("adapters.web").joinpath("static/index.html").read_text("utf-8")

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @router.post("/api/chat")
    def post_chat(request: ChatRequest) -> ChatResponse:
        # A sync route: FastAPI runs it in a worker thread, so the model never blocks the loop.
        return to_response(engine.handle(to_message(request)))

    @router.post("/api/feedback")
    def post_feedback(request: FeedbackRequest) -> FeedbackResponse:
        try:
            recorded = engine.record_feedback(to_feedback(request))
        except StorageError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e
        return FeedbackResponse(recorded=recorded)

    return router
