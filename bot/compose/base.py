"""The composer contract: how an answer the engine decided on is worded.

The engine decides *whether* to answer and with which knowledge-base entries (retrieval, the
confidence threshold, the policies); a `Composer` only decides *how the answer reads*. It is asked
for ANSWER replies alone: clarifications, fallbacks, handoffs and smalltalk go out as the policies
wrote them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from bot.model import Reply, Source, Turn

__all__ = [
    "ComposeOutcome",
    "ComposeRequest",
    "Composer",
    "Composition",
    "ExtractiveComposer",
    "Passage",
    "SentenceSupport",
]


class ComposeOutcome(enum.StrEnum):
    """What became of a composition."""

    #: No model involved: the knowledge-base answer as written.
    EXTRACTIVE = "extractive"
    #: The model's answer passed every check and went out.
    GENERATED = "generated"
    #: The model was asked but its answer was not used; the extractive answer went out.
    FELL_BACK = "fell_back"


@dataclass(frozen=True, slots=True)
class Passage:
    """A knowledge-base passage an answer may draw on, numbered for citations ([1], [2], ...).

    Attributes:
        number: the citation number, from 1.
        source: the entry it comes from, as replies carry it.
        text: the passage text (the entry's answer).
        title: the entry's title or question.
    """

    number: int
    source: Source
    text: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    """Everything a composer may use for one answer.

    Attributes:
        question: what the customer wrote this turn.
        reply: the extractive answer the engine decided on (text, sources, confidence); it is
            what goes out whenever a generated answer cannot.
        passages: the passages, the answered entry first as [1].
        history: the conversation so far, oldest first.
        bot_name: the persona's name.
        tone: "informal" or "formal".
    """

    question: str
    reply: Reply
    passages: tuple[Passage, ...]
    history: tuple[Turn, ...] = ()
    bot_name: str = "Lumen Assistant"
    tone: str = "informal"


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    """How well one sentence of a generated answer is backed by the passages.

    Attributes:
        sentence: the sentence, citations and markup removed.
        similarity: the best cosine similarity to a passage sentence (real embedding model).
        overlap: the share of its content words found in the passages.
        missing_numbers: numbers it states that no passage states.
        checked: False for sentences too short to carry a claim ("Sure!").
        supported: the guard's verdict.
    """

    sentence: str
    similarity: float
    overlap: float
    missing_numbers: tuple[str, ...] = ()
    checked: bool = True
    supported: bool = True


@dataclass(frozen=True, slots=True)
class Composition:
    """A composer's result: the reply to send and how it came about (for error analysis).

    Attributes:
        reply: what goes out; always an ANSWER with the request's sources first.
        outcome: extractive, generated, or fell back to extractive.
        composer: the composer's name.
        reason: why it fell back ("timeout", "http_500", "malformed", "unsupported", ...).
        generated: the model's raw answer, when there was one.
        support: the guard's per-sentence verdicts.
        model: the model asked.
        prompt_version: the prompt templates used.
        latency_ms: time spent composing.
        redacted: how many pieces of personal data were masked before the request left.
    """

    reply: Reply
    outcome: ComposeOutcome
    composer: str
    reason: str = ""
    generated: str | None = None
    support: tuple[SentenceSupport, ...] = field(default=())
    model: str = ""
    prompt_version: str = ""
    latency_ms: float = 0.0
    redacted: int = 0

    @classmethod
    def extractive(cls, request: ComposeRequest, composer: str = "extractive") -> Composition:
        return cls(request.reply, ComposeOutcome.EXTRACTIVE, composer)

    @classmethod
    def fell_back(
        cls,
        request: ComposeRequest,
        composer: str,
        reason: str,
        *,
        generated: str | None = None,
        support: tuple[SentenceSupport, ...] = (),
        model: str = "",
        prompt_version: str = "",
        latency_ms: float = 0.0,
        redacted: int = 0,
    ) -> Composition:
        """The extractive answer, because the generated one could not be used (`reason`)."""
        return cls(
            request.reply,
            ComposeOutcome.FELL_BACK,
            composer,
            reason,
            generated,
            support,
            model,
            prompt_version,
            latency_ms,
            redacted,
        )


@runtime_checkable
class Composer(Protocol):
    """Words an answer the engine has decided on. The docstring is the contract.

    An implementation:

    - MUST return a `Composition` whose `reply` is an ANSWER that keeps `request.reply.sources`
      first, in order (policies read the first source to spot repeated questions); it MAY add
      sources of other passages it used after them.
    - MUST NOT raise: on any failure (timeout, transport error, malformed or unsupported output)
      it returns `Composition.fell_back(request, ...)`, whose reply is `request.reply`, with the
      reason.
    - MUST keep to its time budget; it runs inside a live turn.
    - MUST NOT send personal data (e-mails, phones, cards, IBANs, IPs) to a third party.
    - SHOULD be thread-safe: the engine runs turns in worker threads.
    """

    name: str

    def compose(self, request: ComposeRequest) -> Composition:
        """Word the answer for `request`; never raises."""
        ...


class ExtractiveComposer:
    """The default: the knowledge-base answer exactly as written; needs no model."""

    name = "extractive"

    def compose(self, request: ComposeRequest) -> Composition:
        return Composition.extractive(request, self.name)


def passages_for(
    reply: Reply, texts: Sequence[tuple[Source, str, str | None]]
) -> tuple[Passage, ...]:
    """Number passages for a prompt, the reply's own first source first.

    Args:
        reply: the extractive answer (its first source is passage [1]).
        texts: (source, text, title) for the candidate entries, best first; duplicates of the
            reply's source are dropped.
    """
    ordered: list[tuple[Source, str, str | None]] = []
    seen: set[str] = set()
    first = reply.sources[0].id if reply.sources else None
    for item in sorted(texts, key=lambda t: t[0].id != first):
        if item[0].id in seen:
            continue
        seen.add(item[0].id)
        ordered.append(item)
    return tuple(
        Passage(number, source, text, title)
        for number, (source, text, title) in enumerate(ordered, start=1)
    )
