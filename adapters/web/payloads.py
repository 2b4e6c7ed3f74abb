"""Wire shapes of the local web chat API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Larger texts are refused with 422 before they reach the engine; the engine answers texts over
#: its own (smaller) limit with a polite request to shorten them.
MAX_TEXT_CHARS = 20_000


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    conversation_id: str = Field(min_length=1, max_length=200)
    user: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    message_id: str | None = Field(
        default=None,
        max_length=200,
        description="Optional client id of the message; a retry with the same id is not "
        "answered twice.",
    )


class SourceOut(BaseModel):
    id: str
    title: str | None
    url: str | None
    score: float


class ActionOut(BaseModel):
    kind: str
    label: str
    value: str


class ReplyOut(BaseModel):
    id: str
    text: str
    kind: str
    sources: list[SourceOut]
    actions: list[ActionOut]


class ChatResponse(BaseModel):
    replies: list[ReplyOut]
    #: Who answers the conversation now: "human" after a handoff to a person (the page then
    #: polls `GET /api/chat/{conversation_id}/messages` for their messages), else "bot".
    owner: Literal["bot", "human"] = "bot"


class RelayedMessageOut(BaseModel):
    """A message relayed to the customer while a person owns the conversation."""

    #: Increasing; pass the last one seen as ``after`` to get only newer messages.
    id: int
    #: "agent" for a person's reply, "bot" for the relay's own notices ("a person joined").
    role: Literal["agent", "bot"]
    #: The agent's name (or platform id) for "agent" messages.
    author: str
    text: str


class MessagesResponse(BaseModel):
    messages: list[RelayedMessageOut]
    #: The newest id returned (or the ``after`` given, when nothing is new).
    cursor: int
    owner: Literal["bot", "human"]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reply_id: str = Field(min_length=1, max_length=64)
    user: str = Field(min_length=1, max_length=200)
    value: Literal["up", "down"] | None
    reason: str | None = Field(default=None, max_length=200)


class FeedbackResponse(BaseModel):
    recorded: bool
    #: What the bot says after the rating: the quick reasons after a 👎, a handoff after the
    #: reason "talk_to_person"; usually none.
    replies: list[ReplyOut] = Field(default_factory=list)
