"""Question → answer pairs from conversations, with their context and resolution signals.

Consecutive turns by the same role are read as one message (customers send bursts). Every
customer message followed by an answer (an agent's, or the bot's) makes a pair: the question,
the turns before it (up to `window`, oldest first: multi-turn context), and the answer.

Labels on each pair: `resolved` (the conversation was resolved), `feedback` ("up"/"down" on
that answer), `after_handoff` (a person answered after the bot had been in the conversation).
A bot answer rated 👎 is not a positive: it becomes the `rejected` answer (a hard negative) of
the next answer a person gives in that conversation. Bot turns that are not answers (fallbacks,
handoff notices, clarifying questions) make no pairs, nor do a customer's closing words
("thanks, that worked!") and the pleasantries answering them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from training.model import Conversation, Speaker, Turn, parse_time

__all__ = ["Pair", "build_pairs"]

_NOT_ANSWERS = frozenset({"fallback", "handoff", "clarify", "smalltalk"})
_CLOSING = re.compile(
    r"\b(?:thanks|thank you|thx|ty|cheers|great|perfect|awesome|that worked|it worked|solved|"
    r"works now|got it|bye)\b",
    re.IGNORECASE,
)


def _is_closing(text: str) -> bool:
    """A customer's "thanks, that worked": no question, nothing to learn an answer to."""
    return "?" not in text and len(text.split()) <= 8 and bool(_CLOSING.search(text))


@dataclass(frozen=True, slots=True)
class Pair:
    """One training example: a customer's question in context, and the answer given.

    Attributes:
        id: `<conversation id>#<n>`.
        conversation_id: the conversation it comes from (what splits keep together).
        platform: the conversation's platform.
        question: the customer's message.
        context: earlier turns, oldest first, as `{"role": customer|agent|bot, "text": ...}`.
        answer: the agent's or bot's reply.
        answer_role: "agent" or "bot".
        time: when the question was asked.
        resolved: the conversation's resolution, if known.
        feedback: "up" or "down" on this answer, if rated.
        after_handoff: a person answered after the bot had been in the conversation.
        rejected: an earlier bot answer to this question that was rated 👎 (a hard negative).
        intent: the source's label for the conversation, if any.
        topic: filled in by balancing.
        sources: knowledge-base entry ids the bot's answer drew on.
    """

    id: str
    conversation_id: str
    platform: str
    question: str
    context: tuple[Mapping[str, str], ...]
    answer: str
    answer_role: str
    time: datetime | None = None
    resolved: bool | None = None
    feedback: str | None = None
    after_handoff: bool = False
    rejected: str | None = None
    intent: str | None = None
    topic: str | None = None
    sources: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "platform": self.platform,
            "question": self.question,
            "context": [dict(c) for c in self.context],
            "answer": self.answer,
            "answer_role": self.answer_role,
            "time": None if self.time is None else self.time.isoformat(),
            "resolved": self.resolved,
            "feedback": self.feedback,
            "after_handoff": self.after_handoff,
            "rejected": self.rejected,
            "intent": self.intent,
            "topic": self.topic,
            "sources": list(self.sources),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pair:
        return cls(
            id=str(data["id"]),
            conversation_id=str(data["conversation_id"]),
            platform=str(data.get("platform", "")),
            question=str(data["question"]),
            context=tuple(
                {"role": str(c["role"]), "text": str(c["text"])} for c in data.get("context", ())
            ),
            answer=str(data["answer"]),
            answer_role=str(data.get("answer_role", "agent")),
            time=parse_time(data.get("time")),
            resolved=data.get("resolved"),
            feedback=data.get("feedback"),
            after_handoff=bool(data.get("after_handoff", False)),
            rejected=data.get("rejected"),
            intent=data.get("intent"),
            topic=data.get("topic"),
            sources=tuple(data.get("sources", ())),
        )


@dataclass
class _Block:
    role: Speaker
    turns: list[Turn]

    @property
    def text(self) -> str:
        return "\n".join(t.text for t in self.turns)


def _blocks(turns: Iterable[Turn]) -> list[_Block]:
    blocks: list[_Block] = []
    for turn in turns:
        if blocks and blocks[-1].role is turn.role:
            blocks[-1].turns.append(turn)
        else:
            blocks.append(_Block(turn.role, [turn]))
    return blocks


def _is_answer(block: _Block) -> bool:
    if block.role is Speaker.BOT:
        return not any(t.meta.get("kind") in _NOT_ANSWERS for t in block.turns)
    return block.role is Speaker.AGENT


def _feedback(block: _Block) -> str | None:
    values = [t.meta.get("feedback") for t in block.turns if t.meta.get("feedback")]
    if "down" in values:
        return "down"
    return "up" if "up" in values else None


def build_pairs(
    conversations: Iterable[Conversation], *, window: int = 4, min_answer_words: int = 2
) -> list[Pair]:
    """Every question → answer pair in the conversations; see the module docstring.

    Args:
        conversations: cleaned conversations.
        window: how many earlier messages (blocks) to keep as context.
        min_answer_words: shorter answers ("ok", "done") make no pair.
    """
    pairs: list[Pair] = []
    for conversation in conversations:
        blocks = _blocks(conversation.turns)
        bot_seen = False
        rejected: str | None = None
        n = 0
        for position, block in enumerate(blocks):
            if block.role is Speaker.BOT:
                bot_seen = True
            if block.role is not Speaker.CUSTOMER or position + 1 >= len(blocks):
                continue
            answer = blocks[position + 1]
            if not _is_answer(answer) or _is_closing(block.text):
                continue
            if len(re.findall(r"\w+", answer.text)) < min_answer_words:
                continue
            feedback = _feedback(answer)
            if answer.role is Speaker.BOT and feedback == "down":
                # Not something to learn to say: keep it as the next person's answer's negative.
                rejected = answer.text
                continue
            context = tuple(
                {"role": b.role.value, "text": b.text}
                for b in blocks[max(0, position - window) : position]
            )
            after_handoff = answer.role is Speaker.AGENT and (
                bot_seen or any(t.meta.get("after_handoff") for t in answer.turns)
            )
            sources = tuple(s for t in answer.turns for s in t.meta.get("sources", ()))
            pairs.append(
                Pair(
                    id=f"{conversation.id}#{n}",
                    conversation_id=conversation.id,
                    platform=conversation.platform,
                    question=block.text,
                    context=context,
                    answer=answer.text,
                    answer_role=answer.role.value,
                    time=block.turns[-1].time or conversation.started,
                    resolved=conversation.signals.resolved,
                    feedback=feedback,
                    after_handoff=after_handoff,
                    rejected=rejected if answer.role is Speaker.AGENT else None,
                    intent=conversation.signals.intent,
                    sources=sources,
                )
            )
            if answer.role is Speaker.AGENT:
                rejected = None
            n += 1
    return pairs
