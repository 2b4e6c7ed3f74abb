"""Pure conversions between Rasa's tracker state and the shared model.

A Rasa conversation (``sender_id``) is one bot conversation: platform ``rasa``, workspace the
Rasa input channel (``rest``, ``socketio``…, "" when unknown), channel the sender id. Messages
are keyed by Rasa's ``message_id`` when the tracker has one, otherwise by a hash of the sender,
the user event's timestamp and its text, so a retried action call is not answered twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bot.model import (
    ActionKind,
    FeedbackReason,
    FeedbackValue,
    InboundMessage,
    Reply,
    ReplyKind,
)

__all__ = [
    "FEEDBACK_INTENTS",
    "FEEDBACK_SLOT",
    "PLATFORM",
    "REASON_SLOT",
    "REPLY_ID_SLOT",
    "REPLY_KIND_SLOT",
    "feedback_from",
    "inbound_from_tracker",
    "message_key",
    "posted_ref",
    "reply_message",
]

PLATFORM = "rasa"
#: Slots the actions read and set (declare them in the assistant's domain: docs/rasa.md).
REPLY_ID_SLOT = "supportbot_reply_id"
REPLY_KIND_SLOT = "supportbot_reply_kind"
FEEDBACK_SLOT = "supportbot_feedback"
REASON_SLOT = "supportbot_feedback_reason"
#: Intents that rate the last answer without an entity.
FEEDBACK_INTENTS: Mapping[str, FeedbackValue] = {
    "feedback_up": FeedbackValue.UP,
    "feedback_down": FeedbackValue.DOWN,
    "thumbs_up": FeedbackValue.UP,
    "thumbs_down": FeedbackValue.DOWN,
}
_VALUES: Mapping[str, FeedbackValue] = {
    "up": FeedbackValue.UP,
    "down": FeedbackValue.DOWN,
    "👍": FeedbackValue.UP,
    "👎": FeedbackValue.DOWN,
    "helpful": FeedbackValue.UP,
    "not_helpful": FeedbackValue.DOWN,
}
#: The intent the "Talk to a person" button sends.
HANDOFF_PAYLOAD = "/request_human"


def _last_user_event(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    # Trackers arrive as JSON: an entry that is not an object is skipped, not trusted.
    return next(
        (e for e in reversed(events) if isinstance(e, Mapping) and e.get("event") == "user"), None
    )


def message_key(
    sender_id: str, latest: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> str:
    """A stable id for the tracker's latest user message (de-duplicates retried calls)."""
    message_id = latest.get("message_id")
    if isinstance(message_id, str) and message_id:
        return message_id
    event = _last_user_event(events) or {}
    seed = json.dumps(
        [sender_id, event.get("timestamp"), latest.get("text") or event.get("text")],
        default=str,
    )
    return "h" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def inbound_from_tracker(
    sender_id: str,
    latest: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    *,
    text: str | None = None,
    suffix: str = "",
) -> InboundMessage | None:
    """The customer's latest message as an `InboundMessage`, or None when there is no text.

    Args:
        sender_id: Rasa's conversation id.
        latest: ``tracker.latest_message``.
        events: ``tracker.events`` (for the input channel and a fallback message id).
        text: say this on the customer's behalf instead of their text (a handoff request).
        suffix: appended to the message id, so one Rasa message can carry two bot turns.
    """
    latest = latest if isinstance(latest, Mapping) else {}
    body = text if text is not None else latest.get("text")
    if not isinstance(body, str) or not body.strip():
        return None
    event = _last_user_event(events) or {}
    channel = event.get("input_channel")
    return InboundMessage(
        platform=PLATFORM,
        workspace=channel if isinstance(channel, str) else "",
        channel=sender_id,
        user=sender_id,
        message_id=message_key(sender_id, latest, events) + suffix,
        text=body,
        raw={"latest_message": dict(latest)},
    )


def _button_payload(intent: str, entities: Mapping[str, str]) -> str:
    return f"/{intent}{json.dumps(dict(entities), ensure_ascii=False)}"


def posted_ref(reply: Reply) -> str:
    """The platform reference of a reply handed to Rasa in the action's response (see
    `Engine.attach_platform_ref`): Rasa posts it, the bot never learns a message id."""
    return f"{PLATFORM}:reply:{reply.id}"


def reply_message(reply: Reply) -> dict[str, Any]:
    """`CollectingDispatcher.utter_message` arguments for a reply.

    Answers carry their sources as text lines and in ``custom``; choices become buttons whose
    payload is the topic's title (Rasa reads it as the user's next message); feedback and
    "talk to a person" become buttons with the ``feedback`` and ``request_human`` intents.
    """
    lines = [reply.text]
    links = [s for s in reply.sources if s.url] if reply.kind is ReplyKind.ANSWER else []
    if links:
        lines.append("Sources: " + ", ".join(f"{s.title or s.id} <{s.url}>" for s in links))
    buttons: list[dict[str, str]] = []
    for action in reply.actions:
        if action.kind is ActionKind.CHOOSE:
            buttons.append({"title": action.label, "payload": action.label})
        elif action.kind is ActionKind.FEEDBACK_UP:
            buttons.append(
                {
                    "title": action.label,
                    "payload": _button_payload("feedback", {FEEDBACK_SLOT: "up"}),
                }
            )
        elif action.kind is ActionKind.FEEDBACK_DOWN:
            buttons.append(
                {
                    "title": action.label,
                    "payload": _button_payload("feedback", {FEEDBACK_SLOT: "down"}),
                }
            )
        elif action.kind is ActionKind.FEEDBACK_REASON:
            payload = _button_payload(
                "feedback", {FEEDBACK_SLOT: "down", REASON_SLOT: action.value}
            )
            buttons.append({"title": action.label, "payload": payload})
        elif action.kind is ActionKind.HANDOFF:
            buttons.append({"title": action.label, "payload": HANDOFF_PAYLOAD})
    message: dict[str, Any] = {
        "text": "\n".join(lines),
        "custom": {
            "supportbot": {
                "reply_id": reply.id,
                "kind": reply.kind.value,
                "confidence": reply.confidence,
                "sources": [
                    {"id": s.id, "title": s.title, "url": s.url, "score": s.score}
                    for s in reply.sources
                ],
            }
        },
    }
    if buttons:
        message["buttons"] = buttons
    return message


def _entity(latest: Mapping[str, Any], name: str) -> Any:
    entities = latest.get("entities")
    for entity in entities if isinstance(entities, list | tuple) else ():
        if isinstance(entity, Mapping) and entity.get("entity") == name:
            return entity.get("value")
    return None


def feedback_from(
    latest: Mapping[str, Any] | None, slots: Mapping[str, Any]
) -> tuple[FeedbackValue | None, FeedbackReason | None]:
    """The rating (and 👎 reason) the customer gave: entity, then slot, then intent name."""
    latest = latest if isinstance(latest, Mapping) else {}
    slots = slots if isinstance(slots, Mapping) else {}
    raw = _entity(latest, FEEDBACK_SLOT)
    if raw is None:
        raw = slots.get(FEEDBACK_SLOT)
    value = _VALUES.get(str(raw).strip().lower()) if raw is not None else None
    if value is None:
        intent = latest.get("intent")
        name = intent.get("name", "") if isinstance(intent, Mapping) else ""
        value = FEEDBACK_INTENTS.get(str(name))
    raw_reason = _entity(latest, REASON_SLOT)
    if raw_reason is None:
        raw_reason = slots.get(REASON_SLOT)
    reason = None
    if raw_reason is not None:
        try:
            reason = FeedbackReason(str(raw_reason))
        except ValueError:
            reason = None
    if reason is not None and value is None:
        value = FeedbackValue.DOWN  # reasons explain a 👎
    return value, reason
