"""Slack payloads → the shared model, and the rules that decide what the bot answers. Pure.

Nothing here does I/O: the transport shell (`adapters.slack.app`) asks these functions what an
event is and what to do with it, then does it.

Conversations on Slack:

* in a channel, a conversation is a thread: the key's ``thread`` is the ``thread_ts``, or for a
  top-level message its own ``ts`` (the answer opens a thread under it);
* in a DM, the whole DM is one conversation (``thread`` ""), answered at the top level; a message
  someone writes inside a thread of the DM belongs to that thread's conversation instead.

Message ids are ``"{channel}:{ts}"``: Slack's ``ts`` is unique only within a channel (the engine
scopes message ids to the workspace itself).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from adapters.slack.payloads import (
    AppMentionEvent,
    BlockActionsPayload,
    ButtonAction,
    MessageChangedEvent,
    MessageEvent,
    ReactionEvent,
)
from bot.model import FeedbackEvent, FeedbackReason, FeedbackValue, InboundMessage, utcnow

__all__ = [
    "PLATFORM",
    "USER_SUBTYPES",
    "AgentReply",
    "Route",
    "action_message",
    "agent_reply",
    "button_feedback",
    "conversation_thread",
    "edit_to_inbound",
    "is_bot_traffic",
    "is_dm",
    "is_resolve_reaction",
    "mentions",
    "message_id",
    "message_to_inbound",
    "parse_body",
    "platform_ref",
    "reaction_feedback",
    "reaction_ref",
    "reaction_value",
    "reason_feedback",
    "route_edit",
    "route_message",
    "to_plain_text",
    "well_formed",
]

PLATFORM = "slack"

#: Message subtypes a person writes; every other subtype (bot_message, channel_join,
#: message_deleted, ...) is not a question. ``message_changed`` is handled as an edit.
USER_SUBTYPES: frozenset[str | None] = frozenset({None, "file_share", "thread_broadcast"})

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SPECIAL = re.compile(r"<([^<>]+)>")
_SKIN_TONE = re.compile(r"::skin-tone-\d$")


class Route(enum.StrEnum):
    """What to do with a message event (the "does it apply?" half of a listener)."""

    IGNORE = "ignore"
    #: Addressed to the bot: a DM, a new message in an auto-answer channel, an edited mention.
    ANSWER = "answer"
    #: A reply in a thread: answer only if the bot takes part in that thread.
    IF_IN_THREAD = "if_in_thread"
    #: It mentions the bot: the ``app_mention`` event for the same message answers it.
    MENTION = "mention"
    #: A reply in a thread of the agents' channel: goes to the agent-reply callbacks.
    AGENT_REPLY = "agent_reply"


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's message in the thread of a handoff card in the agents' channel.

    Attributes:
        card_ref: ``"{channel}:{card ts}"``, as `post_handoff_card` returned it.
        workspace: the Slack team id.
        channel: the agents' channel.
        user: the agent's user id.
        text: what the agent wrote, as plain text.
        ts: the agent message's own ts.
    """

    card_ref: str
    workspace: str
    channel: str
    user: str
    text: str
    ts: str


# Requests --------------------------------------------------------------------------------------


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    """The JSON object in an Events API or interactivity request, or None when malformed.

    Events come as a JSON object; interactivity as a form whose ``payload`` field is a JSON
    object. Anything else (not UTF-8, not JSON, a JSON array, an empty body, an object of the
    wrong shape: see `well_formed`) is malformed.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return None
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json" or text.lstrip().startswith("{"):
            parsed: Any = json.loads(text)
        else:
            form = dict(parse_qsl(text, keep_blank_values=True))
            if "payload" not in form:
                return None
            parsed = json.loads(form["payload"])
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser's recursion limit (hostile input).
        return None
    if not isinstance(parsed, dict) or not parsed or not well_formed(parsed):
        return None
    return parsed


_OBJECT_KEYS = ("team", "user", "channel", "container", "message", "enterprise", "view", "state")
_EVENT_OBJECT_KEYS = ("message", "previous_message", "item", "edited")
_EVENT_TEXT_KEYS = ("type", "subtype", "channel", "ts", "thread_ts", "user", "text", "reaction")


def well_formed(body: Mapping[str, Any]) -> bool:
    """Whether a parsed payload has the shape slack-bolt and the listeners index blindly:
    objects where objects belong, text where text belongs, a list of actions."""
    if not isinstance(body.get("type", ""), str):
        return False
    for key in _OBJECT_KEYS:
        value = body.get(key)
        if value is not None and not isinstance(value, dict | str):
            return False
    authorizations = body.get("authorizations")
    if authorizations is not None and not (
        isinstance(authorizations, list) and all(isinstance(a, dict) for a in authorizations)
    ):
        return False
    event = body.get("event")
    if event is not None:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return False
        if any(
            event.get(key) is not None and not isinstance(event[key], dict)
            for key in _EVENT_OBJECT_KEYS
        ):
            return False
        if any(
            event.get(key) is not None and not isinstance(event[key], str)
            for key in _EVENT_TEXT_KEYS
        ):
            return False
    actions = body.get("actions")
    if actions is not None and not (
        isinstance(actions, list)
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    ):
        return False
    # bolt reads ``actions[0]`` of every block action: one without any is malformed.
    return bool(actions) or body.get("type") not in ("block_actions", "interactive_message")


# Text ------------------------------------------------------------------------------------------


def mentions(text: str, user_id: str | None) -> bool:
    """Whether ``text`` mentions ``user_id`` (``<@U123>`` or ``<@U123|name>``)."""
    if not user_id:
        return False
    return any(match.group(1) == user_id for match in _MENTION.finditer(text))


def _special(match: re.Match[str], bot_user_id: str | None) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        if target[1:] == bot_user_id:
            return ""
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        name = label or target[1:].split("^", 1)[0]
        return name if name.startswith("@") else "@" + name
    return label or target


def to_plain_text(text: str, bot_user_id: str | None = None) -> str:
    """Slack message text as a person reads it: the bot's own mention removed, links and
    mentions as their labels, ``&amp; &lt; &gt;`` unescaped, whitespace tidied."""
    plain = _SPECIAL.sub(lambda m: _special(m, bot_user_id), text)
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]+", " ", plain).strip()


# Messages --------------------------------------------------------------------------------------


def is_dm(channel: str, channel_type: str | None = None) -> bool:
    """Whether the channel is a direct message with the bot."""
    return channel_type == "im" if channel_type else channel.startswith("D")


def message_id(channel: str, ts: str) -> str:
    """The engine's message id for a Slack message (see the module docstring)."""
    return f"{channel}:{ts}"


def platform_ref(channel: str, ts: str) -> str:
    """How a posted reply is referred to: ``"{channel}:{ts}"``."""
    return f"{channel}:{ts}"


def conversation_thread(channel: str, ts: str, thread_ts: str | None, *, dm: bool) -> str:
    """The conversation key's ``thread`` for a message (see the module docstring)."""
    if thread_ts:
        return thread_ts
    return "" if dm else ts


def _sent_at(ts: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (ValueError, OverflowError):
        return utcnow()


def is_bot_traffic(event: Mapping[str, Any], bot_user_id: str | None) -> bool:
    """Whether an event is a message the bot must not answer: its own or another bot's
    message, or a non-person subtype (joins, deletions, ...). Reactions are never bot traffic
    here (bolt drops the bot's own reactions)."""
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return False
    subtype = event.get("subtype")
    if subtype == "message_changed":
        inner = event.get("message")
        if not isinstance(inner, Mapping):
            return True
        return is_bot_traffic({"type": "message", **inner}, bot_user_id)
    if subtype not in USER_SUBTYPES:
        return True
    if event.get("bot_id") or event.get("bot_profile"):
        return True
    user = event.get("user")
    return not user or (bot_user_id is not None and user == bot_user_id)


def route_message(
    event: MessageEvent,
    *,
    bot_user_id: str | None,
    auto_answer: Collection[str],
    agents_channel: str | None,
) -> Route:
    """Decide what a new (not edited) message event asks of the bot.

    Args:
        event: the message event, already known not to be bot traffic.
        bot_user_id: the bot's user id in this workspace.
        auto_answer: channels where every new top-level message is answered.
        agents_channel: the agents' channel, if any.
    """
    channel = event["channel"]
    ts = event["ts"]
    thread_ts = event.get("thread_ts")
    in_thread = bool(thread_ts) and thread_ts != ts
    if agents_channel and channel == agents_channel:
        return Route.AGENT_REPLY if in_thread else Route.IGNORE
    if is_dm(channel, event.get("channel_type")):
        return Route.ANSWER
    if mentions(event.get("text", ""), bot_user_id):
        return Route.MENTION
    if in_thread:
        return Route.IF_IN_THREAD
    if channel in auto_answer:
        return Route.ANSWER
    return Route.IGNORE


def route_edit(
    event: MessageChangedEvent,
    *,
    bot_user_id: str | None,
    auto_answer: Collection[str],
    agents_channel: str | None,
) -> Route:
    """Decide what an edit asks of the bot: the same as for a new message, except that an edit
    which mentions the bot is answered here (Slack sends no ``app_mention`` for edits). Changes
    Slack makes itself (no ``edited`` mark, or the text unchanged, e.g. a link preview) are
    ignored."""
    message = event["message"]
    channel = event["channel"]
    ts = message["ts"]
    thread_ts = message.get("thread_ts")
    in_thread = bool(thread_ts) and thread_ts != ts
    if "edited" not in message:
        return Route.IGNORE  # Slack changed it (a link preview, ...), not the author
    previous = event.get("previous_message")
    if previous is not None and previous.get("text") == message.get("text"):
        return Route.IGNORE
    if agents_channel and channel == agents_channel:
        return Route.IGNORE
    if is_dm(channel, event.get("channel_type")) or mentions(message.get("text", ""), bot_user_id):
        return Route.ANSWER
    if in_thread:
        return Route.IF_IN_THREAD
    if channel in auto_answer:
        return Route.ANSWER
    return Route.IGNORE


def message_to_inbound(
    event: MessageEvent | AppMentionEvent, team: str, *, bot_user_id: str | None
) -> InboundMessage:
    """A new message (or mention) as the engine's `InboundMessage`."""
    channel_type = event.get("channel_type") if event["type"] == "message" else None
    return _inbound(event, event, team, channel_type, bot_user_id=bot_user_id)


def edit_to_inbound(
    event: MessageChangedEvent, team: str, *, bot_user_id: str | None
) -> InboundMessage:
    """An edit as the engine's `InboundMessage`: the original message's id, the edit's ts as
    the revision, the edited text."""
    message = event["message"]
    edited = message.get("edited")
    revision = edited["ts"] if edited else event.get("event_ts", event["ts"])
    return _inbound(
        event, message, team, event.get("channel_type"), bot_user_id=bot_user_id, revision=revision
    )


def _inbound(
    event: Mapping[str, Any],
    message: Mapping[str, Any],
    team: str,
    channel_type: str | None,
    *,
    bot_user_id: str | None,
    revision: str = "",
) -> InboundMessage:
    """`message` (the event itself, or the edited message inside it) as an `InboundMessage`."""
    channel = event["channel"]
    ts = message["ts"]
    dm = is_dm(channel, channel_type)
    return InboundMessage(
        platform=PLATFORM,
        workspace=team,
        channel=channel,
        user=message.get("user", ""),
        message_id=message_id(channel, ts),
        text=to_plain_text(message.get("text", ""), bot_user_id),
        thread=conversation_thread(channel, ts, message.get("thread_ts"), dm=dm),
        addressed=True,
        sent_at=_sent_at(revision or ts),
        revision=revision,
        raw=dict(event),
    )


def agent_reply(event: MessageEvent, team: str) -> AgentReply:
    """An agent's message in a handoff card's thread."""
    channel = event["channel"]
    return AgentReply(
        card_ref=platform_ref(channel, event.get("thread_ts", event["ts"])),
        workspace=team,
        channel=channel,
        user=event.get("user", ""),
        text=to_plain_text(event.get("text", "")),
        ts=event["ts"],
    )


# Feedback ---------------------------------------------------------------------------------------


def reaction_value(
    reaction: str, up: Collection[str], down: Collection[str]
) -> FeedbackValue | None:
    """The rating a reaction expresses (skin tones ignored), or None for any other emoji."""
    name = _SKIN_TONE.sub("", reaction)
    if name in up:
        return FeedbackValue.UP
    if name in down:
        return FeedbackValue.DOWN
    return None


def is_resolve_reaction(reaction: str, resolve: Collection[str]) -> bool:
    """Whether a reaction marks the conversation resolved (✅; skin tones ignored)."""
    return _SKIN_TONE.sub("", reaction) in resolve


def reaction_ref(event: ReactionEvent) -> str | None:
    """The platform reference of the message reacted to, or None for files and the like."""
    item = event["item"]
    if item.get("type") != "message" or "channel" not in item or "ts" not in item:
        return None
    return platform_ref(item["channel"], item["ts"])


def reaction_feedback(
    event: ReactionEvent,
    *,
    reply_id: str,
    team: str,
    event_id: str,
    up: Collection[str],
    down: Collection[str],
) -> FeedbackEvent | None:
    """A thumbs reaction on a reply as feedback; removing it withdraws the rating (value None).

    Returns:
        None when the emoji is not a rating one.
    """
    value = reaction_value(event["reaction"], up, down)
    if value is None:
        return None
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=event["user"],
        value=value if event["type"] == "reaction_added" else None,
        event_id=f"{team}:{event_id}",
        at=_sent_at(event["event_ts"]),
    )


_BUTTON_VALUES = {"feedback_up": FeedbackValue.UP, "feedback_down": FeedbackValue.DOWN}


def _team(payload: BlockActionsPayload) -> str:
    team = payload.get("team")
    if team:
        return team["id"]
    return payload["user"].get("team_id", "")


def button_feedback(payload: BlockActionsPayload, action: ButtonAction) -> FeedbackEvent | None:
    """A 👍/👎 click as feedback on the reply whose id is the button's value.

    A repeated click is a new event (its own ``action_ts``) with the same rating, which the
    store counts once; a repeated delivery of the same click has the same event id.
    """
    value = _BUTTON_VALUES.get(action["action_id"])
    reply_id = action.get("value", "")
    if value is None or not reply_id:
        return None
    user = payload["user"]["id"]
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=user,
        value=value,
        event_id=f"{_team(payload)}:action:{user}:{action['action_ts']}",
        at=_sent_at(action["action_ts"]),
    )


def reason_feedback(payload: BlockActionsPayload, action: ButtonAction) -> FeedbackEvent | None:
    """A click on one of the quick reasons offered after a 👎, as a 👎 with that reason on the
    reply whose id is the button's value; None for an unknown reason or no reply id."""
    reason = action["action_id"].removeprefix("feedback_reason_")
    reply_id = action.get("value", "")
    if reason not in set(FeedbackReason) or not reply_id:
        return None
    user = payload["user"]["id"]
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=user,
        value=FeedbackValue.DOWN,
        event_id=f"{_team(payload)}:action:{user}:{action['action_ts']}",
        reason=FeedbackReason(reason).value,
        at=_sent_at(action["action_ts"]),
    )


def action_message(
    payload: BlockActionsPayload, action: ButtonAction, text: str
) -> InboundMessage | None:
    """A button click that speaks for the user ("Talk to a person", a clarify choice), as a
    message in the conversation of the message holding the button; None if it has no place."""
    container = payload["container"]
    channel_info = payload.get("channel")
    channel = container.get("channel_id") or (channel_info["id"] if channel_info else None)
    message = payload.get("message")
    message_ts = container.get("message_ts") or (message["ts"] if message else None)
    if not channel or not message_ts:
        return None
    thread_ts = container.get("thread_ts") or (message.get("thread_ts") if message else None)
    team = _team(payload)
    user = payload["user"]["id"]
    return InboundMessage(
        platform=PLATFORM,
        workspace=team,
        channel=channel,
        user=user,
        message_id=message_id(channel, f"action:{user}:{action['action_ts']}"),
        text=text,
        thread=conversation_thread(channel, message_ts, thread_ts, dm=is_dm(channel)),
        addressed=True,
        sent_at=_sent_at(action["action_ts"]),
        raw=dict(payload),
    )
