"""The Rasa action server's wire format, as far as this adapter reads it.

Rasa POSTs one of these to ``/webhook`` for each custom action it runs (rasa_sdk parses it into a
``Tracker``); the adapter reads the tracker's state through these shapes.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Intent(TypedDict, total=False):
    name: str
    confidence: float


class Entity(TypedDict, total=False):
    entity: str
    value: Any
    start: int
    end: int


class LatestMessage(TypedDict, total=False):
    """``tracker.latest_message``: the user's last message as Rasa's NLU parsed it."""

    text: str
    intent: Intent
    entities: list[Entity]
    message_id: str
    metadata: dict[str, Any]


class TrackerState(TypedDict):
    """``tracker`` in an action request."""

    sender_id: str
    slots: dict[str, Any]
    latest_message: LatestMessage
    events: list[dict[str, Any]]
    paused: NotRequired[bool]
    latest_action_name: NotRequired[str | None]


class ActionRequest(TypedDict):
    """The body of ``POST /webhook``."""

    next_action: str
    sender_id: str
    tracker: TrackerState
    domain: dict[str, Any]
    version: NotRequired[str]


class ActionResponse(TypedDict):
    """What the action server answers: events for the tracker, messages for the user."""

    events: list[dict[str, Any]]
    responses: list[dict[str, Any]]
