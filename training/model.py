"""The one internal conversation format every importer produces.

A `Conversation` is a thread, a ticket or a stored bot conversation: its turns in time order,
each by a customer, a human agent or the bot, and the signals that say how it went (resolved,
thumbs, a handoff). Everything is frozen: change a value with `dataclasses.replace`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "Conversation",
    "Signals",
    "Speaker",
    "Turn",
    "parse_time",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string, a Unix time (number or string), or None.

    Naive times are taken as UTC. Anything unreadable gives None rather than an error: a turn
    with no time still counts, it only sorts by its position.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Speaker(enum.StrEnum):
    """Who wrote a turn."""

    CUSTOMER = "customer"
    AGENT = "agent"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation.

    Attributes:
        role: customer, agent or bot.
        author: the platform's id (or name) of whoever wrote it.
        text: the message text.
        time: when it was sent (aware UTC), if the source says.
        meta: read-only extras: `feedback` ("up"/"down"), `reactions`, `after_handoff`,
            `message_id`, ...
    """

    role: Speaker
    author: str
    text: str
    time: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Speaker(self.role))
        object.__setattr__(self, "meta", _frozen(self.meta))

    @classmethod
    def customer(cls, author: str, text: str, time: datetime | None = None, **meta: Any) -> Turn:
        """A customer's turn."""
        return cls(Speaker.CUSTOMER, author, text, time, meta)

    @classmethod
    def agent(cls, author: str, text: str, time: datetime | None = None, **meta: Any) -> Turn:
        """A human agent's turn."""
        return cls(Speaker.AGENT, author, text, time, meta)

    @classmethod
    def bot(cls, author: str, text: str, time: datetime | None = None, **meta: Any) -> Turn:
        """The bot's turn."""
        return cls(Speaker.BOT, author, text, time, meta)

    def with_text(self, text: str) -> Turn:
        """The same turn with another text (after redaction)."""
        return replace(self, text=text)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "author": self.author,
            "text": self.text,
            "time": None if self.time is None else self.time.isoformat(),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Turn:
        return cls(
            Speaker(data["role"]),
            str(data.get("author", "")),
            str(data["text"]),
            parse_time(data.get("time")),
            data.get("meta") or {},
        )


@dataclass(frozen=True, slots=True)
class Signals:
    """How a conversation went, as far as the source tells.

    Attributes:
        resolved: True when it was marked solved (ticket solved, ✅, closed by an agent),
            False when known open, None when the source does not say.
        thumbs_up: 👍 ratings or reactions on answers.
        thumbs_down: 👎 ratings or reactions on answers.
        handed_off: whether a person took over from the bot.
        intent: a label given by the source (tag, intent), if any.
    """

    resolved: bool | None = None
    thumbs_up: int = 0
    thumbs_down: int = 0
    handed_off: bool = False
    intent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "resolved": self.resolved,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "handed_off": self.handed_off,
            "intent": self.intent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signals:
        return cls(
            resolved=data.get("resolved"),
            thumbs_up=int(data.get("thumbs_up", 0)),
            thumbs_down=int(data.get("thumbs_down", 0)),
            handed_off=bool(data.get("handed_off", False)),
            intent=data.get("intent"),
        )


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation from one source, in time order.

    Attributes:
        id: unique across every source of one run (prefixed by the source, e.g.
            "slack:C024BE91L:1700000000.000100").
        source: the export it came from (a path, or "db").
        platform: "slack", "discord", "zendesk", "web", ... (what balancing caps per platform).
        turns: the messages, oldest first.
        signals: how it went.
    """

    id: str
    source: str
    platform: str
    turns: tuple[Turn, ...]
    signals: Signals = field(default_factory=Signals)

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))

    @property
    def started(self) -> datetime | None:
        """The time of the first timed turn."""
        return next((t.time for t in self.turns if t.time is not None), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "platform": self.platform,
            "turns": [t.to_json() for t in self.turns],
            "signals": self.signals.to_json(),
        }

    def to_jsonl(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conversation:
        return cls(
            id=str(data["id"]),
            source=str(data.get("source", "")),
            platform=str(data.get("platform", "")),
            turns=tuple(Turn.from_json(t) for t in data.get("turns", ())),
            signals=Signals.from_json(data.get("signals") or {}),
        )
