"""How a customer sounds, for the agents' handoff note: VADER's lexicon-based sentiment score.

VADER (``vaderSentiment``) scores short informal English text without a model download; its
compound score runs from -1 (most negative) to +1. The usual thresholds label it: at most -0.05
is negative, at least +0.05 positive, neutral between.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Sentiment", "SentimentScorer"]

NEGATIVE_AT = -0.05
POSITIVE_AT = 0.05


@dataclass(frozen=True, slots=True)
class Sentiment:
    """How the customer sounds.

    Attributes:
        score: the mean compound score of the customer's messages (-1 … 1).
        label: "negative", "neutral" or "positive".
        most_negative: the customer's most negative message, when one is negative.
    """

    score: float
    label: str
    most_negative: str | None = None


def label_for(score: float) -> str:
    """VADER's conventional label for a compound score."""
    if score <= NEGATIVE_AT:
        return "negative"
    if score >= POSITIVE_AT:
        return "positive"
    return "neutral"


class SentimentScorer:
    """Scores messages; the lexicon loads on first use (a few milliseconds), once."""

    def __init__(self) -> None:
        self._analyzer: Any = None
        self._lock = threading.Lock()

    def _compound(self, text: str) -> float:
        with self._lock:
            if self._analyzer is None:
                from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
                    SentimentIntensityAnalyzer,
                )

                self._analyzer = SentimentIntensityAnalyzer()
            scores = self._analyzer.polarity_scores(text)
        return float(scores["compound"])

    def score(self, messages: Iterable[str]) -> Sentiment | None:
        """The sentiment of a customer's messages, or None when there are none."""
        scored = [(self._compound(text), text) for text in messages if text.strip()]
        if not scored:
            return None
        mean = sum(value for value, _ in scored) / len(scored)
        worst_score, worst_text = min(scored, key=lambda pair: pair[0])
        most_negative = worst_text if worst_score <= NEGATIVE_AT else None
        return Sentiment(round(mean, 4), label_for(mean), most_negative)
