"""A linear head over the entries' own example questions: which entry is a question about?

The retriever's soft vote (`knowledge.retriever`) listens to the few units nearest to a query.
Where entries list many phrasings of their question (an intent with dozens of examples, as
support logs and intent datasets give), a multinomial logistic regression over the units'
embeddings learns what sets each entry's examples apart from its neighbours' as a whole, which
the nearest units alone miss. Its probability for an entry is added to that entry's fused score
(`RetrieverConfig.head_weight`); on BANKING77 this takes test recall@1 from 0.9256 to 0.9377
with the untuned model (docs/benchmarks.md, "A linear head over the examples").

The head is fitted at ingest from the vectors the build already has (nothing is embedded again),
and only where it can learn something (`HeadConfig`): enough entries, enough questions per entry
on average, and not so many entries that fitting would hold up an ingest. It is stored as
``head.npz`` in the index directory; an index without it has no head and ranks as before.
The threshold derived without labelled data (`knowledge.calibration.derive`) hides each
held-out example from the indexes but not from the head, which was fitted on it: that
derivation sees the head at its best, a calibration on labelled queries does not.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

FILENAME = "head.npz"


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """When a knowledge base gets a head, and how it is fitted.

    Attributes:
        min_entries: fewer entries than this get no head.
        min_questions: the entries' questions and examples per entry, on average, below which
            there is too little to learn from (the bundled sample has 2.9; BANKING77 130).
        max_entries: more entries than this get no head: fitting grows with entries × units
            (77 entries × 10,000 units: 4–11 s on 2 cores).
        c: inverse regularisation strength (scikit-learn's ``C``); 10 was best on BANKING77's
            held-out training questions among 1, 10 and 100.
        max_iter: L-BFGS iterations.

    Every entry weighs the same in the fit, however many examples it lists (scikit-learn's
    ``class_weight="balanced"``): an entry with thousands of examples, such as one that
    collects questions to decline, would otherwise draw the probability of every question.
    """

    min_entries: int = 3
    min_questions: float = 5.0
    max_entries: int = 1000
    c: float = 10.0
    max_iter: int = 300


class EntryHead:
    """Logits ``vectors @ weights.T + bias``, one column per entry (in entry order)."""

    def __init__(self, weights: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    @property
    def entries(self) -> int:
        return len(self.bias)

    @classmethod
    def fit(
        cls,
        vectors: Vectors,
        unit_entry: npt.NDArray[np.int32],
        unit_is_question: npt.NDArray[np.bool_],
        entries: int,
        config: HeadConfig | None = None,
    ) -> EntryHead | None:
        """Fit a head on every unit (each labelled with its entry), or None where `config`
        says the knowledge base is not one to learn from."""
        config = config or HeadConfig()
        questions = int(unit_is_question.sum())
        if not config.min_entries <= entries <= config.max_entries:
            return None
        if questions < config.min_questions * entries or len(np.unique(unit_entry)) < 2:
            return None
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        model = LogisticRegression(C=config.c, max_iter=config.max_iter, class_weight="balanced")
        with warnings.catch_warnings():
            # Stopping at `max_iter` short of full convergence is fine for ranking.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(vectors, unit_entry)
        classes = model.classes_.astype(np.int64)
        coef = model.coef_.astype(np.float32)
        intercept = model.intercept_.astype(np.float32)
        if len(classes) == 2:  # scikit-learn keeps one row for two classes: logit(1) vs 0
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros(1, dtype=np.float32), intercept])
        weights = np.zeros((entries, vectors.shape[1]), dtype=np.float32)
        # An entry without a unit can never be the answer: its logit is far below any other.
        bias = np.full(entries, -1e4, dtype=np.float32)
        weights[classes], bias[classes] = coef, intercept
        logger.info(
            "fitted a linear head over %d units of %d entries in %.1f s",
            len(unit_entry),
            entries,
            time.perf_counter() - started,
        )
        return cls(weights, bias)

    def probabilities(self, vectors: Vectors) -> npt.NDArray[np.float64]:
        """Per query row, each entry's probability (rows sum to 1)."""
        logits = (vectors @ self.weights.T + self.bias).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def save(self, directory: Path) -> None:
        np.savez(directory / FILENAME, weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, directory: Path, entries: int) -> EntryHead | None:
        """The stored head, or None (none stored, or one that does not fit these entries)."""
        path = directory / FILENAME
        if not path.exists():
            return None
        data = np.load(path)
        head = cls(data["weights"], data["bias"])
        if head.entries != entries:
            logger.warning("%s has %d entries, the index %d: ignored", path, head.entries, entries)
            return None
        return head
