"""The shared message model: one vocabulary for every platform.

Adapters turn platform traffic into these objects and turn `Reply` objects back into platform
traffic; the engine, the policies and the knowledge base only ever see these types. Everything here
is frozen: change a value with `dataclasses.replace`.

Vocabulary: a *conversation* is a sequence of *turns*; a turn is one inbound *message* from a
person and the *replies* the bot gives to it. *Feedback* rates a reply; a *handoff* moves the
conversation's *owner* from the bot to a human and back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "Action",
    "ActionKind",
    "ConversationKey",
    "FeedbackEvent",
    "FeedbackReason",
    "FeedbackValue",
    "InboundMessage",
    "Owner",
    "Reply",
    "ReplyKind",
    "Role",
    "Source",
    "Turn",
    "utcnow",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return _EMPTY
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


class ReplyKind(enum.StrEnum):
    """What kind of decision a reply carries."""

    ANSWER = "answer"
    CLARIFY = "clarify"
    FALLBACK = "fallback"
    HANDOFF = "handoff"
    SMALLTALK = "smalltalk"


class Owner(enum.StrEnum):
    """Who answers in a conversation right now."""

    BOT = "bot"
    HUMAN = "human"


class Role(enum.StrEnum):
    """Who wrote a message in a conversation."""

    USER = "user"
    BOT = "bot"
    AGENT = "agent"


class FeedbackValue(enum.StrEnum):
    """A rating of one reply."""

    UP = "up"
    DOWN = "down"


class ActionKind(enum.StrEnum):
    """Things a customer can do with a reply besides answering it."""

    FEEDBACK_UP = "feedback_up"
    FEEDBACK_DOWN = "feedback_down"
    HANDOFF = "handoff"
    CHOOSE = "choose"
    #: One of the quick reasons offered after a 👎; `Action.value` is a `FeedbackReason`.
    FEEDBACK_REASON = "feedback_reason"


class FeedbackReason(enum.StrEnum):
    """Why a reply was rated 👎, as the quick-reason buttons offer it.

    `TALK_TO_PERSON` also asks for a handoff, as the "Talk to a person" button does.
    """

    WRONG_ANSWER = "wrong_answer"
    OUTDATED = "outdated"
    NOT_WHAT_I_ASKED = "not_what_i_asked"
    TALK_TO_PERSON = "talk_to_person"

    @property
    def label(self) -> str:
        """The button's label."""
        return _REASON_LABELS[self]


_REASON_LABELS: dict[str, str] = {
    "wrong_answer": "Wrong answer",
    "outdated": "Outdated",
    "not_what_i_asked": "Not what I asked",
    "talk_to_person": "Talk to a person",
}


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Identifies one conversation across every platform.

    `thread` is the platform's thread (Slack thread ts, Discord thread id, Zendesk ticket id) or
    empty for a conversation that is the whole channel (a DM, the web chat).
    """

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        return ":".join((self.platform, self.workspace, self.channel, self.thread))

    @classmethod
    def parse(cls, value: str) -> ConversationKey:
        """Inverse of `str(key)`."""
        parts = value.split(":", 3)
        if len(parts) != 4:
            raise ValueError(f"not a conversation key: {value!r}")
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message from a person, as every adapter delivers it to the engine.

    Attributes:
        platform: "web", "console", "slack", "discord", "zendesk", ...
        workspace: the team, guild or subdomain; "" where the platform has one space.
        channel: where it was posted.
        thread: the thread it belongs to ("" for none).
        user: the author's platform id.
        message_id: the platform's id of this message, unique within (platform, workspace); it is
            the de-duplication key.
        text: the message text, already stripped of the bot's own mention.
        addressed: whether the bot was addressed (DM, mention, a thread it is in, an auto-answer
            channel). Turn-taking uses it.
        sent_at: when the platform says it was sent.
        revision: "" for a new message; for an edit, something that tells this version apart
            (e.g. the edit's timestamp). An edit of a message the bot has not answered yet is
            answered once, in its edited form; an edit after the answer gets no second answer.
        raw: the platform payload, read-only, for adapters that need it on the way back.
    """

    platform: str
    workspace: str
    channel: str
    user: str
    message_id: str
    text: str
    thread: str = ""
    addressed: bool = True
    sent_at: datetime = field(default_factory=utcnow)
    revision: str = ""
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", _frozen_mapping(self.raw))

    @property
    def conversation(self) -> ConversationKey:
        return ConversationKey(self.platform, self.workspace, self.channel, self.thread)


@dataclass(frozen=True, slots=True)
class Source:
    """A knowledge-base entry a reply draws on."""

    id: str
    score: float
    title: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """Something offered with a reply: a feedback button, a handoff button, a choice."""

    kind: ActionKind
    label: str
    value: str = ""


FEEDBACK_ACTIONS: tuple[Action, ...] = (
    Action(ActionKind.FEEDBACK_UP, "👍"),
    Action(ActionKind.FEEDBACK_DOWN, "👎"),
    Action(ActionKind.HANDOFF, "Talk to a person"),
)

#: The quick reasons offered after a 👎, in the order they are shown.
FEEDBACK_REASON_ACTIONS: tuple[Action, ...] = tuple(
    Action(ActionKind.FEEDBACK_REASON, reason.label, reason.value) for reason in FeedbackReason
)
FEEDBACK_REASONS_TEXT = "Sorry that didn't help. What was wrong with it?"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the bot says back. Build one with the named constructors.

    `id` is assigned by the engine when the reply is stored; adapters use it to tie feedback
    (buttons, reactions) to the reply.
    """

    text: str
    kind: ReplyKind
    sources: tuple[Source, ...] = ()
    actions: tuple[Action, ...] = ()
    confidence: float | None = None
    id: str = ""

    @classmethod
    def answer(
        cls, text: str, sources: tuple[Source, ...], confidence: float | None = None
    ) -> Reply:
        return cls(text, ReplyKind.ANSWER, sources, FEEDBACK_ACTIONS, confidence)

    @classmethod
    def clarify(
        cls, text: str, options: tuple[Source, ...], confidence: float | None = None
    ) -> Reply:
        choices = tuple(
            Action(ActionKind.CHOOSE, source.title or source.id, source.id) for source in options
        )
        return cls(text, ReplyKind.CLARIFY, options, choices, confidence)

    @classmethod
    def fallback(cls, text: str, confidence: float | None = None) -> Reply:
        return cls(
            text,
            ReplyKind.FALLBACK,
            (),
            (Action(ActionKind.HANDOFF, "Talk to a person"),),
            confidence,
        )

    @classmethod
    def handoff(cls, text: str) -> Reply:
        return cls(text, ReplyKind.HANDOFF)

    @classmethod
    def smalltalk(cls, text: str) -> Reply:
        return cls(text, ReplyKind.SMALLTALK)

    @classmethod
    def feedback_reasons(cls, reply_id: str, text: str = FEEDBACK_REASONS_TEXT) -> Reply:
        """The quick reasons offered after a 👎 on reply `reply_id`.

        It is not a turn's reply and is never stored: its `id` is the rated reply's, so that the
        reason buttons name the reply they explain (as the 👍/👎 buttons do).
        """
        return cls(text, ReplyKind.SMALLTALK, (), FEEDBACK_REASON_ACTIONS, None, reply_id)


@dataclass(frozen=True, slots=True)
class Turn:
    """One line of a conversation's history, oldest first when in a sequence.

    `kind`: for the bot's lines, the kind of reply it was, where known (the engine knows it;
    a history given by hand need not say).
    """

    role: Role
    text: str
    kind: ReplyKind | None = None


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """A rating of a reply from any platform (reaction, button, satisfaction rating).

    `value` None withdraws the user's earlier rating of that reply (a removed reaction).
    `event_id` de-duplicates repeated deliveries; `reason` is an optional chosen reason.
    """

    platform: str
    reply_id: str
    user: str
    value: FeedbackValue | None
    event_id: str
    reason: str | None = None
    at: datetime = field(default_factory=utcnow)
