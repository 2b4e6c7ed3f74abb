"""Hybrid retrieval: dense (FAISS) and lexical (BM25) hits fused into ranked entries.

How a query is scored, per knowledge-base entry:

* ``dense``: the best cosine similarity among the entry's units in the dense top-K;
* ``share``: a soft k-nearest-neighbour vote. Each of the ``vote_k`` nearest units votes for its
  entry with weight ``exp(tau * (cos - best_cos))``; ``share`` is the entry's part of all votes;
* ``lexical``: the entry's best BM25 score divided by the query's best BM25 score;
* ``head``: where the knowledge base has a linear head over its examples (`knowledge.head`),
  the head's probability that the query is about the entry;
* ``score`` = ``share + lexical_weight * lexical_share + dense_weight * dense
  + head_weight * head`` ranks entries.

The features (dense, share, margin to the runner-up, vote count, lexical, feedback) feed the
confidence model in `knowledge.calibration`, which the decision policy compares to a threshold.
``feedback`` is the best candidate's feedback boost over its bound (`knowledge.feedback`), in
(-1, 1): how strongly customers endorsed (> 0) or rejected (< 0) it for similar questions; 0 when
nobody rated anything similar.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from knowledge.base import KnowledgeBase
from knowledge.feedback import FeedbackIndex
from knowledge.index import Hits, lexical_top, merged_unique
from knowledge.types import Context, Entry

logger = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Vectors = npt.NDArray[np.float32]

FEATURES = ("dense", "share", "margin", "votes", "lexical", "feedback")
#: The features that describe the retrieval itself; `feedback` comes on top (see module doc).
RETRIEVAL_FEATURES = FEATURES[:5]


@dataclass(slots=True)
class Candidate:
    """One entry found for a query, with the signals that ranked it.

    Not frozen, though nothing changes one: a query builds twenty, and a frozen dataclass
    takes five times as long to build (2.4 against 0.5 µs each: 0.05 ms of a batched
    search's 0.8 ms a query on the 10,000-entry BANKING77 base, 2 cores).
    """

    entry: Entry
    score: float
    dense: float
    share: float
    lexical: float
    votes: int
    #: The part of `score` that feedback on similar questions added (or took away).
    feedback: float = 0.0


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The ranked candidates for one query and the features of the best one."""

    query: str
    candidates: tuple[Candidate, ...]
    features: tuple[float, ...]
    timings: dict[str, float] = field(default_factory=dict)
    #: The query's embedding, when this retrieval embedded one: a follow-up search reuses it.
    vector: Vector | None = field(default=None, repr=False, compare=False)
    #: The candidates ranked after `candidates`, when the search was asked to rank deeper than
    #: it keeps (`retrieve_many(..., depth=...)`): a follow-up search reuses them.
    deeper: tuple[Candidate, ...] = field(default=(), repr=False, compare=False)
    #: How deep `candidates` and `deeper` together rank: every entry found, up to this rank.
    depth: int = field(default=0, repr=False, compare=False)

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


#: How deep a follow-up ranks the message and its context (`Retriever.retrieve_follow_up`).
FOLLOW_UP_DEPTH = 50


@dataclass(frozen=True, slots=True)
class ContextSearch:
    """A follow-up's context searched ahead (`Retriever.search_context`), for
    `Retriever.retrieve_follow_up(..., ahead=...)`: the same search it would run itself."""

    context: Context
    #: The normalised sum of the context's parts' vectors, which the context was searched by.
    vector: Vector = field(repr=False, compare=False)
    retrieval: Retrieval
    depth: int


@dataclass(frozen=True, slots=True)
class RetrieverConfig:
    dense_k: int = 100
    vote_k: int = 5
    tau: float = 10.0
    lexical_weight: float = 0.1
    dense_weight: float = 0.1
    #: The linear head's weight (`knowledge.head`; 0 ignores it). 2 was best on BANKING77's
    #: held-out training questions among 0.5 to 4 (`bench/head_sweep.py`, docs/benchmarks.md).
    head_weight: float = 2.0
    follow_up_lexical: float = 0.1
    follow_up_sharpness: float = 4.0


class Retriever:
    """Finds entries for a query in a loaded knowledge base.

    Args:
        kb: the loaded knowledge base.
        config: scoring settings.
        feedback: ratings of entries for past questions; entries rated on similar questions
            gain or lose a bounded amount (`knowledge.feedback`). None or empty: no effect and
            no cost.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        config: RetrieverConfig | None = None,
        *,
        feedback: FeedbackIndex | None = None,
    ) -> None:
        self.kb = kb
        self.config = config or RetrieverConfig()
        self.feedback = feedback
        self._ranked_ids: list[str] | None = None
        self._id_ranks: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    def _id_rank(self) -> npt.NDArray[np.int64]:
        """Each entry's place in the order of entry ids (ties in ranking go by id)."""
        ids = self.kb.entry_ids
        if self._ranked_ids is not ids:
            rank = np.empty(len(ids), dtype=np.int64)
            rank[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
            self._id_ranks, self._ranked_ids = rank, ids
        return self._id_ranks

    def embed(self, text: str) -> Vector:
        """The query vector: the text's embedding (unit length)."""
        vector: Vector = self.kb.embedder.encode([text])[0]
        return vector

    def retrieve(
        self,
        text: str,
        *,
        top: int = 5,
        depth: int = 0,
        meanwhile: Callable[[], object] | None = None,
    ) -> Retrieval:
        """Rank entries for one message on its own (follow-ups: `retrieve_follow_up`).

        `meanwhile`: work to do if the message's vector is still being computed in the
        background once its BM25 hits are found (`retrieve_many`), instead of waiting idle;
        not called otherwise. Its failure is logged, and the retrieval goes on.
        """
        return self.retrieve_many([text], top=top, depth=depth, meanwhile=meanwhile)[0]

    def retrieve_many(
        self,
        texts: Sequence[str],
        *,
        top: int = 5,
        depth: int = 0,
        meanwhile: Callable[[], object] | None = None,
    ) -> list[Retrieval]:
        """Rank entries for several messages at once, each on its own; one result per text.

        The same ranking as `retrieve` for each text, computed together: the texts embedded
        together (`Embedder.map_queries`: the cache, then length-sorted forward passes), and
        each pass's texts searched as soon as their vectors exist (`search_many`: one FAISS
        search, BM25, one fusion). With ONNX Runtime the passes run in two lanes, so one
        lane's search runs while the other lane embeds. A process that answers many messages
        at once (a batched loop, or the web app's threads through
        `Responder(batch_window_ms=...)`) spends far less per message this way. Each result's
        ``embed_ms`` and ``search_ms`` are its pass's times divided by the pass's size.

        `depth`: rank this deep, keeping the candidates past `top` in each result's
        ``deeper``, for a message that may be searched again as a follow-up
        (`retrieve_follow_up(..., searched=...)` then reuses the ranking). The first `top` and the
        features are the same as without it. `meanwhile`: as in `retrieve`, for one text.
        """
        if not texts:
            return []
        kb = self.kb
        # One question whose vector is still being computed in the background (a live turn's
        # `Embedder.prefetch`): its BM25 hits need no vector, so they are found meanwhile.
        early: list[Hits] | None = None
        early_ms = 0.0
        if len(texts) == 1 and kb.embedder.pending(texts[0]) and kb.lexical is not None:
            early_started = time.perf_counter()
            early = kb.lexical.top_many(texts, self.config.dense_k)
            early_ms = (time.perf_counter() - early_started) * 1000
            if meanwhile is not None and kb.embedder.pending(texts[0]):
                try:
                    meanwhile()
                except Exception:  # only a head start: the caller does it itself
                    logger.warning("work while waiting for a query vector failed", exc_info=True)

        def search(positions: Sequence[int], vectors: Vectors, seconds: float) -> list[Retrieval]:
            queries = [texts[i] for i in positions]
            results = self.search_many(vectors, queries, top=top, lexical=early, depth=depth)
            if early is not None:
                results[0].timings["lexical_ms"] = early_ms
            for result in results:
                result.timings["embed_ms"] = seconds * 1000 / len(positions)
            return [replace(r, vector=v) for r, v in zip(results, vectors, strict=True)]

        out: list[Retrieval | None] = [None] * len(texts)
        for positions, results in kb.embedder.map_queries(texts, search):
            for i, result in zip(positions, results, strict=True):
                out[i] = result
        done = [r for r in out if r is not None]
        assert len(done) == len(texts), "every text is in one pass"
        return done

    def context_parts_to_embed(self, context: Context) -> tuple[str, ...]:
        """The parts of `context` whose vectors a follow-up's search asks the embedder for:
        the question, and the topic unless the index holds its vector (an entry's question,
        `KnowledgeBase.question_vector`). Whoever wants them ready ahead (anticipated,
        prefetched, kept by another worker) wants these."""
        return self._context_parts(context)[0]

    def _context_parts(self, context: Context) -> tuple[tuple[str, ...], Vector | None]:
        """`context_parts_to_embed`, and the topic's vector if the index holds it."""
        topic = None
        if context.topic and context.topic_entry:
            topic = self.kb.question_vector(context.topic_entry)
        if topic is None:
            return context.parts, None
        return ((context.question,) if context.question else ()), topic

    def search_context(self, context: Context, *, top: int = 5) -> ContextSearch | None:
        """Search a follow-up's context as `retrieve_follow_up(..., top=top)` would, for it to
        take (``ahead``): a turn does it while its message's vector is being computed.

        None, without any forward pass, unless every part's vector is at hand (cached,
        anticipated, kept by another worker, or computed): the search would otherwise wait
        for the model on the turn's thread.
        """
        parts, topic_vector = self._context_parts(context)
        embedder = self.kb.embedder
        if not all(embedder.at_hand(part) for part in parts):
            return None
        depth = max(top, FOLLOW_UP_DEPTH)
        return self._search_context(context, embedder.encode(parts), topic_vector, depth)

    def _search_context(
        self, context: Context, vectors: Vectors, topic_vector: Vector | None, depth: int
    ) -> ContextSearch:
        """Search `context` by its words and by the normalised sum of its parts' `vectors`
        (and its topic's, from the index), ranking `depth` deep."""
        summed = vectors.sum(axis=0, dtype=np.float32)
        if topic_vector is not None:
            summed += topic_vector
        vector: Vector = summed / max(float(np.linalg.norm(summed)), 1e-12)
        return ContextSearch(context, vector, self.search(vector, context.text, top=depth), depth)

    def retrieve_follow_up(
        self,
        text: str,
        context: Context | str,
        *,
        previous: str | None = None,
        top: int = 5,
        searched: Retrieval | None = None,
        ahead: ContextSearch | None = None,
    ) -> Retrieval:
        """Rank entries for a follow-up: those that fit both the new words and the topic.

        "and for business?" after "How much is Plus?" should find the entry that is about
        pricing *and* about business. The message and the context are searched separately and
        each entry scores the mean of its two best similarities (a missing one counts as the
        lowest seen) plus a bonus for the message's own words (BM25), so an entry has to fit
        both. `previous`, the entry the bot just answered with, goes last: a follow-up asks
        for something new, and the context alone would otherwise pull that entry back first.
        `searched`, the message's own earlier `retrieve`, spares embedding it again (its
        ``vector``) and, when it ranked `FOLLOW_UP_DEPTH` deep (``depth``), searching it again.
        `ahead`, this context searched already (`search_context`), spares searching it again;
        it is used with `searched`'s vector only, so the result is the same as without it.

        The context is searched by its words and by the normalised sum of its parts' vectors
        (`Context`); a plain string is a context of that one text.

        Raises:
            ValueError: the context has no text.
        """
        started = time.perf_counter()
        if isinstance(context, str):
            context = Context(context)
        if not context.parts:
            raise ValueError("a follow-up's context needs a question or a topic")
        text_vector = searched.vector if searched is not None else None
        depth = max(top, FOLLOW_UP_DEPTH)
        if ahead is not None and (
            (ahead.context, ahead.depth) != (context, depth) or text_vector is None
        ):
            ahead = None  # another context's search or depth, or no vector of the message's own
        if ahead is None:
            parts, topic_vector = self._context_parts(context)
            # One call for whatever needs embedding: the parts' vectors usually come from the
            # query cache (the question's own turn) or from ahead (anticipated, prefetched).
            vectors = self.kb.embedder.encode(parts if text_vector is not None else (text, *parts))
            if text_vector is None:
                text_vector, vectors = vectors[0], vectors[1:]
        assert text_vector is not None  # `searched`'s, or embedded just now
        embedded = time.perf_counter()
        if searched is not None and searched.vector is not None and searched.depth >= depth:
            ranking = (searched.candidates + searched.deeper)[:depth]
            alone = Retrieval(text, ranking, (), {"search_ms": 0.0, "lexical_ms": 0.0})
        else:
            alone = self.search(text_vector, text, top=depth)
        if ahead is None:  # searched after the message, as it always was
            ahead = self._search_context(context, vectors, topic_vector, depth)
        topic = ahead.retrieval
        own = {c.entry.id: c for c in alone.candidates}
        around = {c.entry.id: c for c in topic.candidates}
        floor_own = min((c.dense for c in alone.candidates), default=0.0)
        floor_around = min((c.dense for c in topic.candidates), default=0.0)
        # Each entry: the mean of its similarities to the message and to the topic, plus a
        # bonus for the message's own words (BM25): they carry what is new ("business").
        mean: dict[str, float] = {}
        joint: dict[str, float] = {}
        for entry_id in own.keys() | around.keys():
            a = own[entry_id].dense if entry_id in own else floor_own
            b = around[entry_id].dense if entry_id in around else floor_around
            lexical = own[entry_id].lexical if entry_id in own else 0.0
            mean[entry_id] = (a + b) / 2
            joint[entry_id] = mean[entry_id] + self.config.follow_up_lexical * lexical
        # The entry just answered takes no part in the vote: its share would otherwise leave
        # the real follow-up candidates looking unsure.
        voters = {e: j for e, j in joint.items() if e != previous}
        best = max(voters.values(), default=0.0)
        # The mean of two similarities spreads entries less than one similarity does: a
        # sharper vote keeps shares comparable with a single query's.
        sharp = self.config.follow_up_sharpness * self.config.tau
        weights = {e: float(np.exp(sharp * (j - best))) for e, j in voters.items()}
        weights.update({e: 0.0 for e in joint.keys() - voters.keys()})
        total = sum(weights.values()) or 1.0
        candidates = []
        for entry_id in joint:
            source = own.get(entry_id) or around[entry_id]
            lexical = own[entry_id].lexical if entry_id in own else 0.0
            share = weights[entry_id] / total
            votes = own[entry_id].votes if entry_id in own else 0
            score = share + self.config.dense_weight * joint[entry_id]
            candidates.append(Candidate(source.entry, score, mean[entry_id], share, lexical, votes))
        candidates.sort(key=lambda c: (c.entry.id == previous, -c.score, c.entry.id))
        ranked = tuple(candidates[: max(top, 1)])
        timings = {
            "embed_ms": (embedded - started) * 1000,
            "search_ms": alone.timings["search_ms"] + topic.timings["search_ms"],
            "lexical_ms": alone.timings["lexical_ms"] + topic.timings["lexical_ms"],
            "fusion_ms": (time.perf_counter() - embedded) * 1000,
        }
        return Retrieval(
            f"{context.text} {text}", ranked, features_of(ranked, self.config.vote_k), timings
        )

    def search(
        self,
        vector: Vector,
        lexical_query: str,
        *,
        top: int = 5,
        exclude_units: Collection[int] = (),
        exclude_entries: Collection[int] = (),
    ) -> Retrieval:
        """Rank entries for an already embedded query.

        `exclude_units` and `exclude_entries` (positions) hide parts of the index: the
        threshold derivation uses them to ask held-out questions.
        """
        kb = self.kb
        assert kb.dense is not None and kb.lexical is not None, "load the knowledge base first"
        cfg = self.config
        t0 = time.perf_counter()
        extra = len(exclude_units)
        if exclude_entries:
            extra += int(np.isin(kb.unit_entry, list(exclude_entries)).sum())
        positions, scores = kb.dense.search(vector[None, :], cfg.dense_k + extra)
        if extra:
            keep = positions[0] >= 0
            if exclude_units:
                keep &= ~np.isin(positions[0], list(exclude_units))
            if exclude_entries:
                keep &= ~np.isin(kb.unit_entry[np.maximum(positions[0], 0)], list(exclude_entries))
            positions = positions[0][keep][None, : cfg.dense_k]
            scores = scores[0][keep][None, : cfg.dense_k]
        t1 = time.perf_counter()
        if exclude_units or exclude_entries:
            lex_scores = kb.lexical.scores(lexical_query)
            if exclude_units and lex_scores.size:
                lex_scores[list(exclude_units)] = 0
            if exclude_entries and lex_scores.size:
                lex_scores[np.isin(kb.unit_entry, list(exclude_entries))] = 0
            units = lexical_top(lex_scores, cfg.dense_k)
            lexical = (units, lex_scores[units])
        else:
            lexical = kb.lexical.search(lexical_query, cfg.dense_k)
        t2 = time.perf_counter()
        (result,) = self._rank(
            vector[None, :], [lexical_query], positions, scores, [lexical], top, exclude_entries
        )
        result.timings.update(search_ms=(t1 - t0) * 1000, lexical_ms=(t2 - t1) * 1000)
        return result

    def search_many(
        self,
        vectors: Vectors,
        lexical_queries: Sequence[str],
        *,
        top: int = 5,
        lexical: Sequence[Hits] | None = None,
        depth: int = 0,
    ) -> list[Retrieval]:
        """`search` for several embedded queries at once: one FAISS call, batched BM25 and
        one fusion for all of them. `lexical`: the queries' BM25 hits, if found already
        (`LexicalIndex.top_many` with `dense_k`). `depth`: as in `retrieve_many`."""
        kb = self.kb
        assert kb.dense is not None and kb.lexical is not None, "load the knowledge base first"
        if len(vectors) != len(lexical_queries):
            raise ValueError("one lexical query per vector is needed")
        if not len(vectors):
            return []
        t0 = time.perf_counter()
        positions, scores = kb.dense.search(vectors, self.config.dense_k)
        t1 = time.perf_counter()
        if lexical is None:
            lexical = kb.lexical.top_many(lexical_queries, self.config.dense_k)
        elif len(lexical) != len(lexical_queries):
            raise ValueError("one set of BM25 hits per query is needed")
        t2 = time.perf_counter()
        results = self._rank(
            vectors, lexical_queries, positions, scores, lexical, top, (), depth=depth
        )
        search_ms = (t1 - t0) * 1000 / len(vectors)
        lexical_ms = (t2 - t1) * 1000 / len(vectors)
        for result in results:
            result.timings.update(search_ms=search_ms, lexical_ms=lexical_ms)
        return results

    def _rank(
        self,
        vectors: Vectors,
        lexical_queries: Sequence[str],
        positions: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        lexical: Sequence[Hits],
        top: int,
        exclude_entries: Collection[int],
        *,
        depth: int = 0,
    ) -> list[Retrieval]:
        """Fuse each query's dense hits and BM25 hits into ranked entries, all at once.

        Each result keeps its best `top`; with a larger `depth`, the ones after them down to
        that rank go in its ``deeper``.

        Row `i` of `positions`/`scores` holds query `i`'s dense hits, best first (position -1:
        no hit); `lexical[i]` its best `dense_k` BM25 units and their scores, best first.
        Every (query, entry) pair is one key, ``query * entries + entry``, so the queries are
        scored together in flat arrays; the arithmetic (float64, and each sum in the order the
        per-entry loop would add) is that loop's, so the scores are exactly the same
        (tests/knowledge/test_batched.py keeps the loop as the reference).
        """
        kb = self.kb
        cfg = self.config
        started = time.perf_counter()
        n, rows = max(len(kb.entries), 1), len(lexical_queries)
        unit_entry = kb.unit_entry

        # Dense: each (query, entry)'s best score is its first hit (hits come best first).
        hit_row, hit_rank = np.nonzero(positions >= 0)
        hit_score = scores[hit_row, hit_rank].astype(np.float64)
        hit_key = hit_row * n + unit_entry[positions[hit_row, hit_rank]]
        dense_keys, first = np.unique(hit_key, return_index=True)
        dense_values = hit_score[first]

        # The soft vote of the `vote_k` nearest units, summed per entry in the hits' order.
        voting = hit_rank < cfg.vote_k
        best = (scores[:, 0] if scores.shape[1] else np.zeros(rows)).astype(np.float64)
        weights = np.exp(cfg.tau * (hit_score[voting] - best[hit_row[voting]]))
        vote_keys, first, inverse = np.unique(
            hit_key[voting], return_index=True, return_inverse=True
        )
        vote_values = np.bincount(inverse, weights=weights, minlength=len(vote_keys)).astype(
            np.float64
        )
        vote_counts = np.bincount(inverse, minlength=len(vote_keys))
        total_votes = _row_sums(vote_keys // n, vote_values, first, rows)

        # Lexical: the best `dense_k` units with a positive BM25 score, relative to the best.
        lex_row = np.repeat(np.arange(rows), [len(units) for units, _ in lexical])
        lex_units = (
            np.concatenate([units for units, _ in lexical])
            if lexical
            else np.zeros(0, dtype=np.int64)
        )
        lex_score = np.concatenate(
            [values.astype(np.float64) / float(values[0]) for _, values in lexical if values.size]
            or [np.zeros(0, dtype=np.float64)]
        )
        lex_keys, first, inverse = np.unique(
            lex_row * n + unit_entry[lex_units], return_index=True, return_inverse=True
        )
        lex_values = np.zeros(len(lex_keys), dtype=np.float64)
        np.maximum.at(lex_values, inverse, lex_score)
        lex_total = _row_sums(lex_keys // n, lex_values, first, rows)

        # Feedback on similar questions: skipped outright while nobody has rated anything.
        feedback = self.feedback
        boost_keys: list[int] = []
        boost_values: list[float] = []
        endorsed: list[int] = []
        boosted_rows = np.zeros(rows, dtype=bool)
        if feedback is not None and feedback.active:
            for row, vector in enumerate(vectors):
                for entry_id, amount in feedback.boosts(vector).items():
                    position = kb.position(entry_id)
                    if position is None:
                        continue
                    boosted_rows[row] = True
                    boost_keys.append(row * n + position)
                    boost_values.append(amount)
                    # An endorsed entry the query did not reach still competes.
                    if amount > 0 and position not in exclude_entries:
                        endorsed.append(row * n + position)
        # The linear head, where the knowledge base has one: its likeliest entries compete
        # even when none of their units was found.
        head = kb.head if cfg.head_weight else None
        head_keys = np.zeros(0, dtype=np.int64)
        if head is not None:
            probabilities = head.probabilities(vectors)
            likely = max(1, min(cfg.vote_k, head.entries))
            likeliest = np.argpartition(-probabilities, likely - 1, axis=1)[:, :likely]
            head_keys = (np.arange(rows)[:, None] * n + likeliest).ravel().astype(np.int64)
            if exclude_entries:
                head_keys = head_keys[~np.isin(head_keys % n, list(exclude_entries))]
        found = merged_unique(
            [dense_keys, lex_keys, np.asarray(endorsed, dtype=np.int64), head_keys]
        )
        found_row = found // n
        d = np.zeros(len(found), dtype=np.float64)
        d[np.searchsorted(found, dense_keys)] = dense_values
        lex = np.zeros(len(found), dtype=np.float64)
        lex[np.searchsorted(found, lex_keys)] = lex_values
        voted = np.searchsorted(found, vote_keys)
        share = np.zeros(len(found), dtype=np.float64)
        share[voted] = vote_values
        share = share / total_votes[found_row]
        votes = np.zeros(len(found), dtype=np.int64)
        votes[voted] = vote_counts
        score = share + cfg.lexical_weight * lex / lex_total[found_row] + cfg.dense_weight * d
        found_entry = found % n
        if head is not None:
            score = score + cfg.head_weight * probabilities[found_row, found_entry]
        boost = np.zeros(len(found), dtype=np.float64)
        if boost_keys:
            keys = np.asarray(boost_keys, dtype=np.int64)
            present = np.isin(keys, found)
            boost[np.searchsorted(found, keys[present])] = np.asarray(boost_values)[present]
        score = score + boost

        # Per query: best first, ties by entry id; Candidates only for the `depth` kept.
        top = max(top, 1)
        depth = max(depth, top)
        per_row = np.bincount(found_row, minlength=rows)
        order = _contenders(found_row, per_row, score, depth)
        order = order[
            np.lexsort((self._id_rank()[found_entry[order]], -score[order], found_row[order]))
        ]
        counts = np.bincount(found_row[order], minlength=rows)
        starts = np.cumsum(counts) - counts
        kept = order[np.arange(len(order)) - starts[found_row[order]] < depth]
        columns = zip(
            kb.entries_at(found_entry[kept].tolist()),
            score[kept].tolist(),
            d[kept].tolist(),
            share[kept].tolist(),
            lex[kept].tolist(),
            votes[kept].tolist(),
            boost[kept].tolist(),
            strict=True,
        )
        candidates = [Candidate(*row) for row in columns]
        fusion_ms = (time.perf_counter() - started) * 1000 / max(rows, 1)
        scale = feedback.config.max_boost if feedback is not None else 0.0
        out = []
        end = 0
        for row, count in enumerate(np.minimum(per_row, depth).tolist()):
            kept_here = min(top, count)
            ranked = tuple(candidates[end : end + kept_here])
            deeper = tuple(candidates[end + kept_here : end + count])
            end += count
            bound = scale if boosted_rows[row] else 0.0
            out.append(
                Retrieval(
                    lexical_queries[row],
                    ranked,
                    features_of(ranked, cfg.vote_k, bound),
                    {"fusion_ms": fusion_ms},
                    deeper=deeper,
                    depth=depth,
                )
            )
        return out


def _contenders(
    row: npt.NDArray[np.int64],
    per_row: npt.NDArray[np.int64],
    score: npt.NDArray[np.float64],
    top: int,
) -> npt.NDArray[np.int64]:
    """Positions of the items that can be among their row's `top` best: those scoring at least
    the row's `top`-th best score (ties included, so none that a full sort would keep is lost).

    `row` is sorted (the fusion's keys are); each row's `top`-th best score comes from one
    partition of a padded (rows, widest row) matrix. Sorting only these few instead of all of
    a pass's keys is 340 → 50 µs for a pass of 16 (20 kept of about 230 each).
    """
    if not len(row):
        return np.zeros(0, dtype=np.int64)
    if len(per_row) == 1:  # one question (a live turn): its scores are the row (21 → 6 µs)
        cut = len(score) - min(top, len(score))
        return np.flatnonzero(score >= np.partition(score, cut)[cut])
    width = int(per_row.max())
    cut = min(top, width)
    starts = np.cumsum(per_row) - per_row
    padded = np.full((len(per_row), width), -np.inf)
    padded[row, np.arange(len(row)) - starts[row]] = score
    threshold = np.partition(padded, width - cut, axis=1)[:, width - cut]
    return np.flatnonzero(score >= threshold[row])


def _row_sums(
    row: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    first: npt.NDArray[np.int64],
    rows: int,
) -> npt.NDArray[np.float64]:
    """Per row, the sum of `values` in the order they were first met (`first`), as a loop
    adding them one by one would round it; 1.0 for a row with nothing (or a zero sum)."""
    order = np.argsort(first, kind="stable")
    sums = np.bincount(row[order], weights=values[order], minlength=rows).astype(np.float64)
    sums[sums == 0] = 1.0
    return sums


def features_of(
    candidates: tuple[Candidate, ...], vote_k: int, feedback_bound: float = 0.0
) -> tuple[float, ...]:
    """The confidence features of the best candidate, in the order of `FEATURES`.

    `feedback_bound` is the feedback index's `max_boost`: the best candidate's boost divided by
    it is the ``feedback`` feature, in (-1, 1). 0 (no feedback applied) gives 0.
    """
    if not candidates:
        return (0.0,) * len(FEATURES)
    best = candidates[0]
    runner_up = max((c.dense for c in candidates[1:]), default=0.0)
    endorsement = best.feedback / feedback_bound if feedback_bound > 0 else 0.0
    return (
        best.dense,
        best.share,
        best.dense - runner_up,
        best.votes / max(vote_k, 1),
        best.lexical,
        max(-1.0, min(1.0, endorsement)),
    )
