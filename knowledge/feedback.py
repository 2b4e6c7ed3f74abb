"""Feedback that changes ranking and answers: endorsed entries gain, rejected ones lose, for similar
questions.

Each rating is kept as ``(question vector, entry id, sign)``: +1 when a customer endorsed the
entry the bot answered a question with (👍), -1 when they rejected it (👎). At retrieval time the
ratings of past questions similar to the current one (cosine ≥ `FeedbackConfig.threshold`, found
in a small FAISS inner-product index) move each rated entry's score by a bounded amount::

    total(entry) = Σ sign · cos(question, rated question)      over similar rated questions
    boost(entry) = max_boost · tanh(total / saturation)        ∈ (-max_boost, +max_boost)

so one rating nudges, several agreeing ratings push up to the bound and never past it, and
conflicting ratings cancel. A retriever with an empty index skips all of this (`active`).

The best candidate's ``boost / max_boost`` (in (-1, 1)) is also the ``feedback`` confidence
feature (`knowledge.retriever.FEATURES`): the confidence model moves the confidence toward 1 for
an endorsed answer and toward 0 for a rejected one, by a bounded share
(`knowledge.calibration.with_feedback`), so feedback changes whether the bot answers, not only
what it ranks first.

Ratings are keyed (e.g. by reply and user): rating again replaces, withdrawing removes. The
FAISS index is rebuilt lazily on the next search after a change; it is exact (flat) and small
(one vector per rating), so rebuilding costs little next to embedding the query.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from knowledge.retriever import Vector

__all__ = ["FeedbackConfig", "FeedbackIndex", "Rating"]


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """How ratings move scores.

    Attributes:
        threshold: the least cosine similarity between the current question and a rated one for
            the rating to count.
        max_boost: the bound on the score change of an entry, either way. Retrieval scores are
            mostly a vote share (0..1): 0.15 lets clear feedback overturn a close call but not a
            confident answer.
        saturation: the summed, similarity-weighted ratings at which the boost reaches ~76 % of
            its bound (tanh(1)).
        neighbours: at most this many similar rated questions are read per query.
    """

    threshold: float = 0.75
    max_boost: float = 0.15
    saturation: float = 1.5
    neighbours: int = 50

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity (-1..1), not {self.threshold}")
        if self.max_boost < 0 or self.saturation <= 0 or self.neighbours < 1:
            raise ValueError("max_boost must be ≥ 0, saturation > 0 and neighbours ≥ 1")


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating: the rated question's embedding (unit length), the entry, +1 or -1."""

    vector: npt.NDArray[np.float32]
    entry_id: str
    sign: int


class FeedbackIndex:
    """The ratings of entries for past questions, searchable by question similarity.

    Thread-safe: the engine adds ratings from worker threads while turns search.

    Args:
        config: threshold and bounds.
    """

    def __init__(self, config: FeedbackConfig | None = None) -> None:
        self.config = config or FeedbackConfig()
        self._ratings: dict[Hashable, Rating] = {}
        self._lock = threading.Lock()
        self._index: Any = None
        self._entries: list[str] = []
        self._signs: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ratings)

    @property
    def active(self) -> bool:
        """Whether there is any rating to apply (retrieval skips the index when not)."""
        return bool(self._ratings)

    def set(self, key: Hashable, vector: Vector, entry_id: str, sign: int) -> None:
        """Record (or replace) the rating `key`: `sign` +1 endorses, -1 rejects, 0 removes it.

        Raises:
            ValueError: `sign` is not -1, 0 or 1, or the vector is empty.
        """
        if sign not in (-1, 0, 1):
            raise ValueError(f"a rating's sign is -1, 0 or 1, not {sign}")
        if sign == 0:
            self.remove(key)
            return
        flat = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(flat))
        if not flat.size or norm == 0.0:
            raise ValueError("a rated question needs a non-zero embedding")
        with self._lock:
            self._ratings[key] = Rating((flat / norm).astype(np.float32), entry_id, sign)
            self._index = None

    def remove(self, key: Hashable) -> None:
        """Forget the rating `key` (a withdrawn rating); unknown keys are ignored."""
        with self._lock:
            if self._ratings.pop(key, None) is not None:
                self._index = None

    def extend(self, ratings: Iterable[tuple[Hashable, Vector, str, int]]) -> int:
        """Record many ratings ``(key, vector, entry id, sign)``; returns how many were kept."""
        kept = 0
        for key, vector, entry_id, sign in ratings:
            self.set(key, vector, entry_id, sign)
            kept += sign != 0
        return kept

    def _searchable(self) -> tuple[Any, list[str], npt.NDArray[np.float32]]:
        with self._lock:
            if self._index is None:
                import faiss  # lazy: heavy import

                ratings = list(self._ratings.values())
                dimension = ratings[0].vector.shape[0] if ratings else 1
                index = faiss.IndexFlatIP(dimension)
                if ratings:
                    index.add(np.stack([r.vector for r in ratings]))
                self._entries = [r.entry_id for r in ratings]
                self._signs = np.array([r.sign for r in ratings], dtype=np.float32)
                self._index = index
            return self._index, self._entries, self._signs

    def boosts(self, vector: Vector) -> dict[str, float]:
        """Score changes for the entries rated on questions similar to `vector`.

        Returns:
            entry id → boost in ``(-max_boost, +max_boost)``; empty when nothing similar was
            rated.
        """
        if not self._ratings:
            return {}
        cfg = self.config
        index, entries, signs = self._searchable()
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != index.d:
            raise ValueError(
                f"the query has {query.shape[1]} dimensions, the rated questions {index.d}: "
                "were they embedded with another model?"
            )
        norm = float(np.linalg.norm(query)) or 1.0
        k = min(cfg.neighbours, index.ntotal)
        scores, positions = index.search(query / norm, k)
        totals: dict[str, float] = {}
        for score, position in zip(scores[0].tolist(), positions[0].tolist(), strict=True):
            if position < 0 or score < cfg.threshold:
                continue
            entry = entries[position]
            totals[entry] = totals.get(entry, 0.0) + float(signs[position]) * score
        return {
            entry: cfg.max_boost * math.tanh(total / cfg.saturation)
            for entry, total in totals.items()
            if total != 0.0
        }
