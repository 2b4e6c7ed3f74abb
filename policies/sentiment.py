"""How negative a message sounds: VADER's compound score (-1 most negative … 1 most positive).

VADER (``vaderSentiment``) is a lexicon: no model download, about a tenth of a millisecond a
message. The lexicon loads on first use, once per process.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["compound"]

_lock = threading.Lock()
_analyzer: Any = None


def compound(text: str) -> float:
    """The VADER compound score of `text`; 0.0 for empty text."""
    global _analyzer
    if not text.strip():
        return 0.0
    with _lock:
        if _analyzer is None:
            from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
                SentimentIntensityAnalyzer,
            )

            _analyzer = SentimentIntensityAnalyzer()
        scores = _analyzer.polarity_scores(text)
    return float(scores["compound"])
