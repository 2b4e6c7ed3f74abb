"""The answering decision: answer, ask which topic was meant, or fall back.

Pure: it reads the retrieval result and the confidence, and returns a decision; it sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.model import ReplyKind
from knowledge.retriever import Candidate, Retrieval


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    """Settings of the answering decision.

    Attributes:
        clarify_floor: below `threshold * clarify_floor` the bot falls back instead of clarifying.
        clarify_margin: candidates whose best similarity is within this of the best one's are
            "close" and offered as choices.
        max_options: how many topics a clarifying question names.
        clarify_min_similarity: candidates less similar than this to the question are never
            offered: naming unrelated topics is worse than saying "I don't know".
    """

    clarify_floor: float = 0.5
    clarify_min_similarity: float = 0.4
    clarify_margin: float = 0.06
    max_options: int = 3


@dataclass(frozen=True, slots=True)
class Decision:
    kind: ReplyKind
    confidence: float
    candidates: tuple[Candidate, ...]

    @property
    def answered(self) -> bool:
        return self.kind is ReplyKind.ANSWER


def decide(
    retrieval: Retrieval,
    confidence: float,
    threshold: float,
    config: DecisionConfig | None = None,
) -> Decision:
    """Answer at or above the threshold; clarify between close candidates; else fall back.

    An entry that declines (`Entry.declines`) is never answered with nor offered: ranked first,
    it makes the decision a fallback whatever the confidence.
    """
    config = config or DecisionConfig()
    if retrieval.candidates and retrieval.candidates[0].entry.declines:
        return Decision(ReplyKind.FALLBACK, confidence, ())
    candidates = tuple(c for c in retrieval.candidates if not c.entry.declines)
    if not candidates:
        return Decision(ReplyKind.FALLBACK, 0.0, ())
    if confidence >= threshold:
        return Decision(ReplyKind.ANSWER, confidence, candidates[:1])
    best = candidates[0]
    close = tuple(
        c
        for c in candidates
        if best.dense - c.dense <= config.clarify_margin
        and c.dense >= config.clarify_min_similarity
    )[: config.max_options]
    distinct_topics = {c.entry.title or c.entry.question or c.entry.id for c in close}
    if (
        confidence >= threshold * config.clarify_floor
        and len(close) >= 2
        and len(distinct_topics) >= 2
    ):
        return Decision(ReplyKind.CLARIFY, confidence, close)
    return Decision(ReplyKind.FALLBACK, confidence, candidates[:3])
