"""How a fine-tuning cycle proves itself: retrieval figures on held-out questions.

Two held-out sets, whichever the training data allows:

* **knowledge-base questions**: example questions kept out of training. A temporary knowledge
  base is built from the remaining examples with the model under test, and each held-out
  question goes through the bot's own hybrid retriever (`knowledge.retriever.Retriever`), so the
  figure is the one the bot would see.
* **pairs**: held-out (anchor, positive[, negative]) pairs. Every anchor searches all held-out
  positives and negatives; it scores when its own positive ranks first.

`recall_at_1` and `mrr` decide promotion (see `Metrics.beats`).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knowledge.embeddings import Embedder
from knowledge.types import Entry

#: Entries ranked per held-out question; MRR counts ranks up to this depth.
RANK_DEPTH = 10


@dataclass(frozen=True, slots=True)
class HeldOutQuestion:
    """A knowledge-base question kept out of training, with the entry that answers it."""

    text: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class HeldOutPair:
    """An exported training pair kept out of training."""

    anchor: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True, slots=True)
class Metrics:
    """Retrieval figures of one model on one held-out set (or the mean over several)."""

    queries: int
    recall_at_1: float
    recall_at_5: float
    mrr: float

    @classmethod
    def from_ranks(cls, ranks: Sequence[int | None]) -> Metrics:
        """Figures from 1-based ranks of the right answer (None: not in the top `RANK_DEPTH`)."""
        if not ranks:
            return cls(0, 0.0, 0.0, 0.0)
        n = len(ranks)
        return cls(
            queries=n,
            recall_at_1=sum(r == 1 for r in ranks) / n,
            recall_at_5=sum(r is not None and r <= 5 for r in ranks) / n,
            mrr=statistics.fmean(1 / r if r else 0.0 for r in ranks),
        )

    @classmethod
    def mean(cls, parts: Sequence[Metrics]) -> Metrics:
        """The unweighted mean of several held-out sets' figures (each set counts the same)."""
        if not parts:
            return cls(0, 0.0, 0.0, 0.0)
        if len(parts) == 1:
            return parts[0]
        return cls(
            queries=sum(p.queries for p in parts),
            recall_at_1=statistics.fmean(p.recall_at_1 for p in parts),
            recall_at_5=statistics.fmean(p.recall_at_5 for p in parts),
            mrr=statistics.fmean(p.mrr for p in parts),
        )

    def beats(self, other: Metrics) -> bool:
        """Better recall@1, or the same recall@1 and a better MRR."""
        return (round(self.recall_at_1, 6), round(self.mrr, 6)) > (
            round(other.recall_at_1, 6),
            round(other.mrr, 6),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("recall_at_1", "recall_at_5", "mrr"):
            data[key] = round(data[key], 4)
        return data


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A model's figures: per held-out set and their mean (what promotion compares)."""

    overall: Metrics
    kb: Metrics | None = None
    pairs: Metrics | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"overall": self.overall.to_json()}
        if self.kb is not None:
            data["kb"] = self.kb.to_json()
        if self.pairs is not None:
            data["pairs"] = self.pairs.to_json()
        return data


def evaluate_kb(
    embedder: Embedder, entries: Sequence[Entry], questions: Sequence[HeldOutQuestion]
) -> Metrics:
    """Rank held-out questions against a knowledge base of `entries` built with `embedder`.

    The knowledge base lives in a temporary folder and goes away afterwards. Questions are
    embedded in batches, then searched one by one with the bot's hybrid retriever.
    """
    # Imported here: the retriever pulls in FAISS and BM25.
    from knowledge.base import KnowledgeBase
    from knowledge.retriever import Retriever

    if not questions:
        return Metrics.from_ranks([])
    with tempfile.TemporaryDirectory(prefix="supportbot-train-eval-") as tmp:
        kb = KnowledgeBase(Path(tmp) / "index", embedder)
        kb.ingest(entries, replace_all=True)
        retriever = Retriever(kb)
        vectors = embedder.encode([q.text for q in questions])
        ranks: list[int | None] = []
        for question, vector in zip(questions, vectors, strict=True):
            result = retriever.search(vector, question.text, top=RANK_DEPTH)
            ranked = [c.entry.id for c in result.candidates]
            ranks.append(
                ranked.index(question.entry_id) + 1 if question.entry_id in ranked else None
            )
    return Metrics.from_ranks(ranks)


def evaluate_pairs(embedder: Embedder, pairs: Sequence[HeldOutPair]) -> Metrics:
    """Each held-out anchor searches every held-out positive and negative for its positive."""
    if not pairs:
        return Metrics.from_ranks([])
    corpus: dict[str, int] = {}
    for pair in pairs:
        for text in (pair.positive, pair.negative):
            if text is not None:
                corpus.setdefault(text, len(corpus))
    anchors: dict[str, set[int]] = {}
    for pair in pairs:
        anchors.setdefault(pair.anchor, set()).add(corpus[pair.positive])
    texts = list(corpus)
    doc_vectors = embedder.encode(texts)
    anchor_texts = list(anchors)
    query_vectors = embedder.encode(anchor_texts)
    scores = query_vectors @ doc_vectors.T
    depth = min(RANK_DEPTH, len(texts))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    ranks: list[int | None] = []
    for row, anchor in zip(top.tolist(), anchor_texts, strict=True):
        wanted = anchors[anchor]
        ranks.append(next((i + 1 for i, doc in enumerate(row) if doc in wanted), None))
    return Metrics.from_ranks(ranks)
