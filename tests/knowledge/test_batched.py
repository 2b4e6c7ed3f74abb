"""Deciding many messages at once gives the decisions of deciding them one by one.

`Retriever.retrieve_many` and `Responder.respond_many` embed, search and score a batch together;
the vectorised fusion in `Retriever._rank` must score exactly as the per-entry loop it replaced
(kept here as `reference_rank`). Real model, the bundled sample knowledge base.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.engine import Responder
from bot.model import Reply, Role, Turn
from bot.service import confidence_model
from knowledge.base import KnowledgeBase
from knowledge.batching import Batcher
from knowledge.embeddings import Embedder
from knowledge.feedback import FeedbackIndex
from knowledge.retriever import FOLLOW_UP_DEPTH, Candidate, Retrieval, Retriever

pytestmark = pytest.mark.model

QUERIES = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "queries.jsonl"


def _queries() -> list[str]:
    lines = QUERIES.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()][:40]


def _summary(retrieval: Retrieval) -> list[tuple[str, float, float, float, float, int]]:
    return [
        (c.entry.id, c.score, c.dense, c.share, c.lexical, c.votes) for c in retrieval.candidates
    ]


def reference_rank(
    retriever: Retriever, vector: np.ndarray, query: str, top: int
) -> list[Candidate]:
    """The per-entry fusion loop the vectorised `_rank` replaced (no exclusions)."""
    kb, cfg = retriever.kb, retriever.config
    assert kb.dense is not None and kb.lexical is not None
    positions, scores = kb.dense.search(vector[None, :], cfg.dense_k)
    keep = positions[0] >= 0
    positions, scores = positions[0][keep], scores[0][keep]
    lex_scores = kb.lexical.scores(query)
    dense: dict[int, float] = {}
    votes: dict[int, float] = {}
    counts: dict[int, int] = {}
    best = float(scores[0]) if len(scores) else 0.0
    for rank, (unit, score) in enumerate(zip(positions.tolist(), scores.tolist(), strict=True)):
        e = int(kb.unit_entry[unit])
        dense.setdefault(e, score)
        if rank < cfg.vote_k:
            votes[e] = votes.get(e, 0.0) + float(np.exp(cfg.tau * (score - best)))
            counts[e] = counts.get(e, 0) + 1
    total_votes = sum(votes.values()) or 1.0
    lexical: dict[int, float] = {}
    # The best `dense_k` units with a positive score, best first, ties by position.
    positive = [(-float(s), unit) for unit, s in enumerate(lex_scores.tolist()) if s > 0]
    top_units = [unit for _, unit in sorted(positive)[: cfg.dense_k]]
    if top_units:
        lex_max = float(lex_scores[top_units[0]])
        for unit in top_units:
            e = int(kb.unit_entry[unit])
            lexical[e] = max(lexical.get(e, 0.0), float(lex_scores[unit]) / lex_max)
    lex_total = sum(lexical.values()) or 1.0
    feedback = retriever.feedback
    boosts = feedback.boosts(vector) if feedback is not None and feedback.active else {}
    found = set(dense) | set(lexical)
    for entry_id, boost in boosts.items():
        position = kb.position(entry_id)
        if boost > 0 and position is not None:
            found.add(position)
    candidates = []
    for e in found:
        share = votes.get(e, 0.0) / total_votes
        lex = lexical.get(e, 0.0)
        d = dense.get(e, 0.0)
        score = share + cfg.lexical_weight * lex / lex_total + cfg.dense_weight * d
        boost = boosts.get(kb.entries[e].id, 0.0)
        candidates.append(
            Candidate(kb.entries[e], score + boost, d, share, lex, counts.get(e, 0), boost)
        )
    candidates.sort(key=lambda c: (-c.score, c.entry.id))
    return candidates[:top]


def test_the_vectorised_fusion_scores_exactly_as_the_loop(sample_kb: KnowledgeBase) -> None:
    feedback = FeedbackIndex()
    retriever = Retriever(sample_kb, feedback=feedback)
    texts = [*_queries(), "plus", "the", "zzzz qqqq"]
    vectors = sample_kb.embedder.encode(texts)
    for vector, text in zip(vectors, texts, strict=True):
        assert list(retriever.search(vector, text, top=20).candidates) == reference_rank(
            retriever, vector, text, 20
        )
    # With ratings, endorsed and rejected entries move, the same way in both.
    feedback.set(("r1", "u1"), vectors[0], sample_kb.entries[3].id, 1)
    feedback.set(("r2", "u1"), vectors[1], sample_kb.entries[0].id, -1)
    assert feedback.active
    for vector, text in zip(vectors[:5], texts[:5], strict=True):
        assert list(retriever.search(vector, text, top=20).candidates) == reference_rank(
            retriever, vector, text, 20
        )


def test_retrieve_many_ranks_as_retrieve_does(sample_kb: KnowledgeBase) -> None:
    retriever = Retriever(sample_kb)
    texts = _queries()

    batched = retriever.retrieve_many(texts, top=20)
    single = [retriever.retrieve(text, top=20) for text in texts]

    assert len(batched) == len(texts)
    for one, many in zip(single, batched, strict=True):
        assert [c.entry.id for c in many.candidates] == [c.entry.id for c in one.candidates]
        for a, b in zip(_summary(one), _summary(many), strict=True):
            # A padded batch embeds within float rounding of a single text.
            assert a[1:5] == pytest.approx(b[1:5], abs=1e-5)
            assert a[5] == b[5]
        assert many.features == pytest.approx(one.features, abs=1e-5)
        assert many.vector is not None and one.vector is not None
        assert float(many.vector @ one.vector) == pytest.approx(1.0, abs=1e-5)
    assert retriever.retrieve_many([]) == []


def test_retrieve_many_in_lanes_ranks_as_retrieve_does(tmp_path: Path, sample_kb_dir: Path) -> None:
    """With ONNX Runtime each pass is searched in its lane as soon as it is embedded."""
    import shutil

    shutil.copytree(sample_kb_dir, tmp_path / "index")
    embedder = Embedder(backend="onnx", onnx_dir=tmp_path / "onnx", lanes=2)
    kb = KnowledgeBase(tmp_path / "index", embedder).load()
    retriever = Retriever(kb)
    texts = _queries() * 2  # 80: five passes of 16

    batched = retriever.retrieve_many(texts, top=20)
    single = [retriever.retrieve(text, top=20) for text in texts]

    assert len(batched) == len(texts)
    for one, many in zip(single, batched, strict=True):
        assert [c.entry.id for c in many.candidates] == [c.entry.id for c in one.candidates]
        assert many.features == pytest.approx(one.features, abs=1e-4)
        assert many.timings["embed_ms"] > 0

    # Several batches at once (the web app's decision batcher beside a backlog, say) share
    # the lanes and the BM25 tokenizer, and each still gets its own rankings.
    def ranked(start: int) -> list[list[str]]:
        batch = texts[start : start + 40]
        return [[c.entry.id for c in r.candidates] for r in retriever.retrieve_many(batch, top=20)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ranked, (0, 10, 20, 40)))
    for start, got in zip((0, 10, 20, 40), results, strict=True):
        assert got == [[c.entry.id for c in r.candidates] for r in single[start : start + 40]]
    embedder.close()


def test_respond_many_decides_as_respond_does(sample_kb: KnowledgeBase) -> None:
    responder = Responder(Retriever(sample_kb), confidence_model(sample_kb))
    history = [
        Turn(Role.USER, "How much does the Plus plan cost?"),
        Turn(Role.BOT, sample_kb.entry("pricing-plus").answer),  # type: ignore[union-attr]
    ]
    texts = [*_queries(), "hello", "", "x" * 5000, "and for business?"]
    histories = [[] for _ in texts[:-1]] + [history]

    batched = responder.respond_many(texts, histories)
    single = [responder.respond(text, h) for text, h in zip(texts, histories, strict=True)]

    for (reply_a, trace_a), (reply_b, trace_b) in zip(single, batched, strict=True):
        assert reply_b.kind is reply_a.kind
        assert reply_b.text == reply_a.text
        assert [s.id for s in reply_b.sources] == [s.id for s in reply_a.sources]
        assert (reply_b.confidence or 0.0) == pytest.approx(reply_a.confidence or 0.0, abs=1e-5)
        assert trace_b.used_context == trace_a.used_context
        assert trace_b.query == trace_a.query
    assert batched[-1][1].used_context  # the follow-up read its history in the batch too
    assert responder.respond_many([]) == []
    with pytest.raises(ValueError, match="histories"):
        responder.respond_many(["a", "b"], [[]])


def test_batched_queries_use_and_fill_the_cache(sample_kb_dir: Path) -> None:
    embedder = Embedder(cache_size=64)
    texts = _queries()[:20]
    first = embedder.encode_queries(texts)
    assert embedder.cache is not None and embedder.cache.misses == len(texts)
    again = embedder.encode_queries([t.upper() for t in texts])  # case folds to the same key
    assert embedder.cache.hits == len(texts)
    assert np.array_equal(first, again)
    assert embedder.encode_queries([]).shape == (0, embedder.dimension)


def test_lexical_scores_many_equals_scores(sample_kb: KnowledgeBase) -> None:
    lexical = sample_kb.lexical
    assert lexical is not None
    texts = [*_queries()[:10], "the", ""]
    for text, scores in zip(texts, lexical.scores_many(texts), strict=True):
        assert np.array_equal(scores, lexical.scores(text))


def test_search_many_needs_one_query_per_vector(sample_kb: KnowledgeBase) -> None:
    retriever = Retriever(sample_kb)
    vectors = sample_kb.embedder.encode(["a", "b"])
    with pytest.raises(ValueError, match="one lexical query per vector"):
        retriever.search_many(vectors, ["a"])


def test_bm25_found_while_the_vector_is_pending_ranks_the_same(
    sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = Retriever(sample_kb)
    texts = _queries()[:12]
    expected = [_summary(retriever.retrieve(text)) for text in texts]
    lexical, embedder = sample_kb.lexical, sample_kb.embedder
    assert lexical is not None
    order: list[str] = []
    top_many, map_queries = lexical.top_many, embedder.map_queries

    def found(*args: Any, **kwargs: Any) -> Any:
        order.append("bm25")
        return top_many(*args, **kwargs)

    def embedded(*args: Any, **kwargs: Any) -> Any:
        order.append("vector")
        return map_queries(*args, **kwargs)

    monkeypatch.setattr(lexical, "top_many", found)
    monkeypatch.setattr(embedder, "map_queries", embedded)
    monkeypatch.setattr(embedder, "pending", lambda text: True)
    for text, summary in zip(texts, expected, strict=True):
        order.clear()
        result = retriever.retrieve(text)
        assert order == ["bm25", "vector"]  # BM25 first, then the wait for the vector
        assert _summary(result) == summary
        assert result.timings["lexical_ms"] > 0
    with pytest.raises(ValueError, match="one set of BM25 hits per query"):
        retriever.search_many(embedder.encode(["a"]), ["a"], lexical=[])


def test_a_deeper_ranking_keeps_the_same_candidates_and_features(sample_kb: KnowledgeBase) -> None:
    retriever = Retriever(sample_kb)
    texts = _queries()[:20]
    plain = retriever.retrieve_many(texts, top=5)
    deep = retriever.retrieve_many(texts, top=5, depth=30)
    for shallow, ranked in zip(plain, deep, strict=True):
        assert _summary(ranked) == _summary(shallow)
        assert ranked.features == shallow.features
        assert (shallow.deeper, shallow.depth, ranked.depth) == ((), 5, 30)
        # `deeper` goes on where `candidates` stop, as a search for the 30 best ranks them.
        assert ranked.vector is not None
        whole = retriever.search(ranked.vector, ranked.query, top=30)
        assert _summary(replace(ranked, candidates=ranked.candidates + ranked.deeper)) == (
            _summary(whole)
        )
        assert len(ranked.deeper) == len(whole.candidates) - 5 > 0


def test_a_follow_up_reuses_the_message_s_deeper_ranking(
    sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = Retriever(sample_kb)
    text, context = "and for business?", "How much does the Plus plan cost?"
    shallow = retriever.retrieve(text, top=20)
    expected = retriever.retrieve_follow_up(
        text, context, previous="pricing-plus", top=20, searched=shallow
    )
    searched: list[str] = []
    search = retriever.search

    def counted(vector: Any, query: str, **kwargs: Any) -> Retrieval:
        searched.append(query)
        return search(vector, query, **kwargs)

    monkeypatch.setattr(retriever, "search", counted)
    deep = retriever.retrieve(text, top=20, depth=FOLLOW_UP_DEPTH)
    got = retriever.retrieve_follow_up(
        text, context, previous="pricing-plus", top=20, searched=deep
    )
    assert searched == [context]  # the message itself is not searched again
    assert _summary(got) == _summary(expected)
    assert got.features == expected.features
    assert got.candidates[0].entry.id == "pricing-business"
    searched.clear()
    retriever.retrieve_follow_up(text, context, top=20, searched=shallow)
    assert searched == [text, context]  # ranked only 20 deep: searched again, 50 deep


def test_concurrent_responds_share_batches_and_decide_the_same(sample_kb: KnowledgeBase) -> None:
    texts = _queries()[:8]
    plain = Responder(Retriever(sample_kb), confidence_model(sample_kb))
    expected = [plain.respond(text)[0] for text in texts]
    batched = Responder(Retriever(sample_kb), confidence_model(sample_kb), batch_window_ms=50)
    barrier = threading.Barrier(len(texts))

    def ask(text: str) -> Reply:
        barrier.wait(timeout=30)
        return batched.respond(text)[0]

    try:
        with ThreadPoolExecutor(len(texts)) as pool:
            replies = list(pool.map(ask, texts))
    finally:
        batched.close()

    assert batched.batcher is not None and batched.batcher.items == len(texts)
    for got, want in zip(replies, expected, strict=True):
        assert (got.kind, got.text, got.sources[:1] and got.sources[0].id) == (
            want.kind,
            want.text,
            want.sources[:1] and want.sources[0].id,
        )


def test_the_batcher_runs_queued_items_together_in_order() -> None:
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(items)
        return [2 * i for i in items]

    # max_batch is reached at once, so nothing waits for the (long) window.
    batcher: Batcher[int, int] = Batcher(double, window_s=30, max_batch=5)
    try:
        futures = [batcher.submit(i) for i in range(5)]
        assert [f.result(timeout=30) for f in futures] == [0, 2, 4, 6, 8]
    finally:
        batcher.close()
    assert calls == [[0, 1, 2, 3, 4]]
    assert (batcher.batches, batcher.items) == (1, 5)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)
    with pytest.raises(ValueError):
        Batcher(double, window_s=-1)


def test_a_failing_batch_fails_every_caller() -> None:
    def broken(items: list[int]) -> list[int]:
        raise OSError("the index is on fire")

    def short(items: list[int]) -> list[int]:
        return items[:1]

    for run, error in ((broken, OSError), (short, RuntimeError)):
        batcher: Batcher[int, int] = Batcher(run, window_s=30, max_batch=2)
        try:
            futures = [batcher.submit(i) for i in range(2)]
            for future in futures:
                with pytest.raises(error):
                    future.result(timeout=30)
        finally:
            batcher.close()
