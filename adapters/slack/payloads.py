"""Wire shapes of the Slack traffic the adapter reads and writes, as Slack documents them.

Inbound: Events API callbacks (``event_callback`` wrapping a message, ``app_mention`` or reaction
event) and interactivity payloads (``block_actions``). Outbound: Block Kit blocks and message
metadata for ``chat.postMessage``. Only the fields the adapter uses are typed; Slack sends more.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "ActionsBlock",
    "AppMentionEvent",
    "Block",
    "BlockActionsPayload",
    "ButtonAction",
    "ButtonElement",
    "ContextBlock",
    "EventCallback",
    "HeaderBlock",
    "MessageChangedEvent",
    "MessageEvent",
    "MessageMetadata",
    "MrkdwnText",
    "PlainText",
    "ReactionEvent",
    "ReactionItem",
    "SectionBlock",
]


# Events API ---------------------------------------------------------------------------------


class MessageEvent(TypedDict):
    """A ``message`` event (``message.im``, ``message.channels``, ``message.groups``)."""

    type: Literal["message"]
    channel: str
    ts: str
    user: NotRequired[str]
    text: NotRequired[str]
    thread_ts: NotRequired[str]
    channel_type: NotRequired[str]
    subtype: NotRequired[str]
    bot_id: NotRequired[str]
    team: NotRequired[str]
    event_ts: NotRequired[str]
    edited: NotRequired[EditInfo]


class EditInfo(TypedDict):
    """Who edited a message and when (the edit's own ts)."""

    user: str
    ts: str


class EditedMessage(TypedDict):
    """The message inside a ``message_changed`` event, as it reads after the edit."""

    type: Literal["message"]
    ts: str
    user: NotRequired[str]
    text: NotRequired[str]
    thread_ts: NotRequired[str]
    bot_id: NotRequired[str]
    subtype: NotRequired[str]
    edited: NotRequired[EditInfo]


class MessageChangedEvent(TypedDict):
    """A ``message`` event with subtype ``message_changed``: an edit of ``message.ts``."""

    type: Literal["message"]
    subtype: Literal["message_changed"]
    channel: str
    ts: str
    message: EditedMessage
    previous_message: NotRequired[EditedMessage]
    channel_type: NotRequired[str]
    hidden: NotRequired[bool]
    event_ts: NotRequired[str]


class AppMentionEvent(TypedDict):
    """An ``app_mention`` event: someone wrote ``<@BOT>`` in a channel the bot is in."""

    type: Literal["app_mention"]
    channel: str
    ts: str
    user: NotRequired[str]
    text: NotRequired[str]
    thread_ts: NotRequired[str]
    bot_id: NotRequired[str]
    event_ts: NotRequired[str]


class ReactionItem(TypedDict):
    """What was reacted to; the adapter only cares about messages."""

    type: str
    channel: NotRequired[str]
    ts: NotRequired[str]


class ReactionEvent(TypedDict):
    """A ``reaction_added`` or ``reaction_removed`` event."""

    type: Literal["reaction_added", "reaction_removed"]
    user: str
    reaction: str
    item: ReactionItem
    item_user: NotRequired[str]
    event_ts: str


class EventCallback(TypedDict):
    """The Events API envelope around every event."""

    type: Literal["event_callback"]
    team_id: str
    api_app_id: NotRequired[str]
    event: MessageEvent | MessageChangedEvent | AppMentionEvent | ReactionEvent
    event_id: str
    event_time: NotRequired[int]


# Interactivity --------------------------------------------------------------------------------


class PlainText(TypedDict):
    """A ``plain_text`` text object."""

    type: Literal["plain_text"]
    text: str
    emoji: NotRequired[bool]


class MrkdwnText(TypedDict):
    """A ``mrkdwn`` text object."""

    type: Literal["mrkdwn"]
    text: str


class ButtonAction(TypedDict):
    """One clicked button inside ``block_actions``."""

    type: Literal["button"]
    action_id: str
    block_id: NotRequired[str]
    value: NotRequired[str]
    text: NotRequired[PlainText]
    action_ts: str


class ActionUser(TypedDict):
    """Who clicked."""

    id: str
    team_id: NotRequired[str]
    username: NotRequired[str]


class ActionTeam(TypedDict):
    """The workspace the click came from."""

    id: str
    domain: NotRequired[str]


class ActionChannel(TypedDict):
    """The channel of the message holding the button."""

    id: str
    name: NotRequired[str]


class ActionContainer(TypedDict):
    """Where the button lives: a message (``message_ts``, ``channel_id``, maybe ``thread_ts``)."""

    type: str
    message_ts: NotRequired[str]
    channel_id: NotRequired[str]
    thread_ts: NotRequired[str]


class ActionMessage(TypedDict):
    """The message holding the button, as it was posted."""

    ts: str
    thread_ts: NotRequired[str]
    text: NotRequired[str]


class BlockActionsPayload(TypedDict):
    """A ``block_actions`` interactivity payload (a button click)."""

    type: Literal["block_actions"]
    user: ActionUser
    team: ActionTeam | None
    channel: NotRequired[ActionChannel]
    container: ActionContainer
    message: NotRequired[ActionMessage]
    actions: list[ButtonAction]
    api_app_id: NotRequired[str]
    trigger_id: NotRequired[str]
    response_url: NotRequired[str]


# Block Kit (outbound) ------------------------------------------------------------------------


class ButtonElement(TypedDict):
    """A ``button`` element."""

    type: Literal["button"]
    text: PlainText
    action_id: str
    value: str
    style: NotRequired[Literal["primary", "danger"]]


class SectionBlock(TypedDict):
    """A ``section`` block of mrkdwn text (3,000 characters at most)."""

    type: Literal["section"]
    text: MrkdwnText
    block_id: NotRequired[str]


class HeaderBlock(TypedDict):
    """A ``header`` block (plain text, 150 characters at most)."""

    type: Literal["header"]
    text: PlainText


class ContextBlock(TypedDict):
    """A ``context`` block: small print such as sources."""

    type: Literal["context"]
    elements: list[MrkdwnText]


class ActionsBlock(TypedDict):
    """An ``actions`` block of buttons (25 at most; ``action_id`` unique in the block)."""

    type: Literal["actions"]
    block_id: NotRequired[str]
    elements: list[ButtonElement]


class DividerBlock(TypedDict):
    """A ``divider`` block."""

    type: Literal["divider"]


Block = SectionBlock | HeaderBlock | ContextBlock | ActionsBlock | DividerBlock


class ReplyPayload(TypedDict):
    """The ``event_payload`` of the bot's message metadata."""

    reply_id: str


class MessageMetadata(TypedDict):
    """Message ``metadata`` on ``chat.postMessage``: ties a posted message to its reply id."""

    event_type: str
    event_payload: ReplyPayload
