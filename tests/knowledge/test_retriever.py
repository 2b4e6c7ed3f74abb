"""Tests for knowledge.retriever: hybrid retrieval on the bundled sample knowledge base."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knowledge.base import UNIT_KINDS, KnowledgeBase
from knowledge.index import merged_unique
from knowledge.retriever import (
    FEATURES,
    FOLLOW_UP_DEPTH,
    Candidate,
    Retrieval,
    Retriever,
    RetrieverConfig,
    _contenders,
    features_of,
)
from knowledge.types import Context, Entry

FAQ = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "faq.jsonl"


def _faq() -> list[dict[str, object]]:
    return [json.loads(line) for line in FAQ.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def retriever(sample_kb: KnowledgeBase) -> Retriever:
    return Retriever(sample_kb)


def _ids(retrieval: Retrieval) -> list[str]:
    return [c.entry.id for c in retrieval.candidates]


# --- exact questions, examples and paraphrases (real model) ----------------------------------


@pytest.mark.model
@pytest.mark.parametrize(
    ("question", "entry_id"),
    [
        ("How do I reset my password?", "reset-password"),
        ("How do I delete my Lumen Notes account?", "delete-account"),
        ("How much does the Plus plan cost?", "pricing-plus"),
        ("How much does the Business plan cost?", "pricing-business"),
        ("Can I get a refund for my Plus subscription?", "refund-personal"),
        ("What is the refund policy for Business plans?", "refund-business"),
        ("How do I export a note as a PDF?", "export-pdf"),
        ("How do I export notes as Markdown?", "export-markdown"),
        ("Can I use Lumen Notes offline on my phone?", "offline-mobile"),
        ("Does the desktop app work offline?", "offline-desktop"),
        ("How much storage do I get on the Plus plan?", "storage-limit-plus"),
        ("What are the API rate limits?", "api-rate-limits"),
    ],
)
def test_an_exact_faq_question_finds_its_own_entry_first(
    retriever: Retriever, question: str, entry_id: str
) -> None:
    result = retriever.retrieve(question)
    assert result.top is not None
    assert result.top.entry.id == entry_id, _ids(result)
    assert result.top.dense == pytest.approx(1.0, abs=1e-4)
    assert result.features[0] == pytest.approx(result.top.dense)


@pytest.mark.model
def test_every_faq_question_and_example_maps_back_to_its_entry(
    sample_kb: KnowledgeBase, retriever: Retriever
) -> None:
    queries = [
        (text, str(row["id"]))
        for row in _faq()
        for text in [row["question"], *row["examples"]]  # type: ignore[list-item]
    ]
    assert len(queries) > 250
    vectors = sample_kb.embedder.encode([text for text, _ in queries])
    wrong = []
    for (text, expected), vector in zip(queries, vectors, strict=True):
        top = retriever.search(vector, text, top=1).top
        if top is None or top.entry.id != expected:
            wrong.append((text, expected, top and top.entry.id))
    assert not wrong


@pytest.mark.model
@pytest.mark.parametrize(
    ("query", "entry_id"),
    [
        (
            "I can't remember the password I set up last year, how do I get back in?",
            "reset-password",
        ),
        ("I'd like my Lumen profile and everything in it gone for good", "delete-account"),
        ("Is there a way to require a code from my phone whenever I sign in?", "two-factor-auth"),
        ("which cards can I use to pay, and is PayPal an option?", "payment-methods"),
        ("I need to hand in my meeting notes as a PDF document", "export-pdf"),
        (
            "I'm going on a flight and want all my notebooks on my Android phone without internet",
            "offline-mobile",
        ),
        (
            "Our script keeps getting HTTP 429 from your API, what's the allowance?",
            "api-rate-limits",
        ),
        (
            "After signing in it bounces me straight back to the sign-in screen over and over",
            "login-loop",
        ),
        ("what does it cost per month to get lumen plus", "pricing-plus"),
        ("how long is the link to set a new password valid", "reset-password"),
    ],
)
def test_a_paraphrase_finds_the_right_entry_in_the_top_three(
    retriever: Retriever, query: str, entry_id: str
) -> None:
    result = retriever.retrieve(query)
    assert entry_id in _ids(result)[:3], _ids(result)


@pytest.mark.model
@pytest.mark.parametrize(
    ("keyword", "entry_id"),
    [
        ("SAML", "sso-business"),
        ("SCIM", "sso-business"),
        ("Evernote", "import-evernote"),
        ("enex", "import-evernote"),
        ("PayPal", "payment-methods"),
        ("YubiKey", "two-factor-auth"),
    ],
)
def test_a_rare_keyword_surfaces_its_entry(
    sample_kb: KnowledgeBase, retriever: Retriever, keyword: str, entry_id: str
) -> None:
    result = retriever.retrieve(keyword)
    assert result.top is not None
    assert result.top.entry.id == entry_id, _ids(result)
    assert result.top.lexical == pytest.approx(1.0)
    # The word really is in the lexical index, in one of the entry's own units.
    positions, _ = sample_kb.lexical.search(keyword, 1)
    assert sample_kb.entries[int(sample_kb.unit_entry[positions[0]])].id == entry_id


@pytest.mark.model
def test_candidates_are_ranked_and_cut_to_top(retriever: Retriever) -> None:
    result = retriever.retrieve("How do I cancel my subscription?", top=4)
    assert len(result.candidates) == 4
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    assert len({c.entry.id for c in result.candidates}) == 4
    assert len(result.features) == len(FEATURES)
    assert {"embed_ms", "search_ms", "lexical_ms", "fusion_ms"} <= result.timings.keys()
    top = result.top
    assert top is not None and top.entry.id == "cancel-subscription"
    assert 0 < top.share <= 1 and 1 <= top.votes <= retriever.config.vote_k


@pytest.mark.model
def test_an_out_of_scope_question_gets_a_weak_top(retriever: Retriever) -> None:
    inside = retriever.retrieve("How do I reset my password?")
    outside = retriever.retrieve("What's the weather like in Paris tomorrow?")
    assert outside.top is not None and inside.top is not None
    assert outside.top.dense < 0.5 < inside.top.dense


# --- follow-ups ------------------------------------------------------------------------------


@pytest.mark.model
def test_follow_up_keeps_the_topic_in_view(retriever: Retriever) -> None:
    result = retriever.retrieve_follow_up("and for business?", "How much does the Plus plan cost?")
    ids = _ids(result)
    assert "pricing-business" in ids[:2], ids
    assert result.query == "How much does the Plus plan cost? and for business?"
    assert {"embed_ms", "search_ms", "lexical_ms", "fusion_ms"} <= result.timings.keys()


@pytest.mark.model
def test_follow_up_ranks_business_pricing_above_the_plus_answer(retriever: Retriever) -> None:
    ids = _ids(
        retriever.retrieve_follow_up(
            "and for business?", "How much does the Plus plan cost?", previous="pricing-plus"
        )
    )
    assert ids[0] == "pricing-business", ids
    assert ids[-1] == "pricing-plus" or "pricing-plus" not in ids[:-1], ids


@pytest.mark.model
@pytest.mark.parametrize(
    ("text", "context", "entry_id"),
    [
        (
            "and if we're on Business?",
            "How much storage do I get on the free plan?",
            "storage-limit-business",
        ),
        ("what about from notion", "Can I import my notes from Evernote?", "import-notion"),
        ("can I get it in markdown instead?", "How do I export a note as PDF?", "export-markdown"),
    ],
)
def test_follow_up_finds_the_entry_that_fits_both(
    retriever: Retriever, text: str, context: str, entry_id: str
) -> None:
    assert _ids(retriever.retrieve_follow_up(text, context))[0] == entry_id


# --- exclusions ------------------------------------------------------------------------------


def _unit(kb: KnowledgeBase, entry_id: str, kind: str) -> int:
    position = kb.position(entry_id)
    units = np.flatnonzero((kb.unit_entry == position) & (kb.unit_kind == UNIT_KINDS.index(kind)))
    return int(units[0])


@pytest.mark.model
def test_exclude_units_hides_exactly_those_units(
    sample_kb: KnowledgeBase, retriever: Retriever
) -> None:
    text = "How do I export a note as a PDF?"
    unit = _unit(sample_kb, "export-pdf", "question")
    vector = np.load(sample_kb.directory / "vectors.npy")[unit]
    plain = retriever.search(vector, text)
    assert plain.top is not None and plain.top.entry.id == "export-pdf"
    assert plain.top.dense == pytest.approx(1.0, abs=1e-4)
    hidden = retriever.search(vector, text, exclude_units=(unit,))
    top = hidden.top
    assert top is not None
    # Its other units (examples, passage) still find the entry, but not with a perfect match.
    assert "export-pdf" in _ids(hidden)[:2]
    own = next(c for c in hidden.candidates if c.entry.id == "export-pdf")
    assert own.dense < 0.99
    every_unit = np.flatnonzero(sample_kb.unit_entry == sample_kb.position("export-pdf")).tolist()
    gone = retriever.search(vector, text, exclude_units=every_unit, top=20)
    assert "export-pdf" not in _ids(gone)


@pytest.mark.model
def test_exclude_entries_hides_the_whole_entry(
    sample_kb: KnowledgeBase, retriever: Retriever
) -> None:
    vector = sample_kb.embedder.encode(["SAML single sign-on"])[0]
    plain = retriever.search(vector, "SAML single sign-on", top=20)
    assert _ids(plain)[0] == "sso-business"
    position = sample_kb.position("sso-business")
    assert position is not None
    hidden = retriever.search(vector, "SAML single sign-on", top=20, exclude_entries=(position,))
    assert "sso-business" not in _ids(hidden)
    assert len(hidden.candidates) == 20
    # The other entries keep their similarities: only the hidden one is gone.
    before = {c.entry.id: c.dense for c in plain.candidates}
    shared = [c for c in hidden.candidates if c.entry.id in before]
    assert len(shared) >= 10
    for candidate in shared:
        assert candidate.dense == pytest.approx(before[candidate.entry.id], abs=1e-6)


@pytest.mark.model
def test_excluding_every_entry_finds_nothing(
    sample_kb: KnowledgeBase, retriever: Retriever
) -> None:
    vector = sample_kb.embedder.encode(["SAML single sign-on"])[0]
    everything = range(len(sample_kb.entries))
    hidden = retriever.search(vector, "SAML single sign-on", exclude_entries=everything)
    assert hidden.candidates == () and hidden.top is None
    assert hidden.features == (0.0,) * len(hidden.features)


# --- pure helpers ----------------------------------------------------------------------------


def _candidate(
    entry_id: str, dense: float, share: float, votes: int, lexical: float, feedback: float = 0.0
) -> Candidate:
    return Candidate(Entry(id=entry_id, answer="a"), share, dense, share, lexical, votes, feedback)


def test_features_of_the_best_candidate() -> None:
    candidates = (
        _candidate("a", 0.9, 0.7, 4, 0.5),
        _candidate("b", 0.6, 0.2, 1, 1.0),
        _candidate("c", 0.8, 0.1, 0, 0.0),
    )
    dense, share, margin, votes, lexical, feedback = features_of(candidates, vote_k=5)
    assert feedback == 0.0  # no feedback applied
    assert dense == 0.9
    assert share == 0.7
    assert margin == pytest.approx(0.1)  # to the best *other* similarity, not the next rank
    assert votes == pytest.approx(0.8)
    assert lexical == 0.5


def test_features_of_edge_cases() -> None:
    assert features_of((), vote_k=5) == (0.0,) * len(FEATURES)
    alone = features_of((_candidate("a", 0.5, 1.0, 5, 0.0),), vote_k=5)
    assert alone == (0.5, 1.0, 0.5, 1.0, 0.0, 0.0)
    assert features_of((_candidate("a", 0.5, 1.0, 3, 0.0),), vote_k=0)[3] == 3.0


def test_the_feedback_feature_is_the_best_candidates_boost_over_its_bound() -> None:
    endorsed = (_candidate("a", 0.7, 0.3, 1, 0.0, feedback=0.06), _candidate("b", 0.8, 0.6, 4, 0.0))
    assert features_of(endorsed, vote_k=5, feedback_bound=0.15)[-1] == pytest.approx(0.4)
    rejected = (_candidate("a", 0.7, 0.3, 1, 0.0, feedback=-0.15),)
    assert features_of(rejected, vote_k=5, feedback_bound=0.15)[-1] == -1.0
    # Never past ±1, and no bound (no feedback index) means no feedback.
    assert features_of(rejected, vote_k=5, feedback_bound=0.1)[-1] == -1.0
    assert features_of(endorsed, vote_k=5)[-1] == 0.0
    # Only the best candidate's rating counts.
    assert features_of(endorsed[::-1], vote_k=5, feedback_bound=0.15)[-1] == 0.0


def test_retrieval_top_is_none_without_candidates() -> None:
    assert Retrieval("q", (), features_of((), 5)).top is None


def test_config_defaults_are_sane() -> None:
    config = RetrieverConfig()
    assert config.vote_k <= config.dense_k


@given(
    st.lists(
        st.lists(st.integers(0, 50), max_size=40).map(lambda xs: sorted(set(xs))),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(0, 50), max_size=10),
)
def test_merged_unique_is_numpys_unique(sorted_parts: list[list[int]], loose: list[int]) -> None:
    parts = [np.asarray(p, dtype=np.int64) for p in [*sorted_parts, loose]]
    assert np.array_equal(merged_unique(parts), np.unique(np.concatenate(parts)))


@given(
    st.lists(st.lists(st.integers(0, 6), max_size=30), min_size=1, max_size=6),
    st.integers(1, 8),
)
def test_contenders_keep_every_row_best_a_full_sort_keeps(rows: list[list[int]], top: int) -> None:
    # Small integer scores, so ties at each row's cut are common.
    row = np.repeat(np.arange(len(rows)), [len(r) for r in rows]).astype(np.int64)
    score = np.asarray([s for r in rows for s in r], dtype=np.float64)
    tiebreak = np.arange(len(score))[::-1]
    per_row = np.bincount(row, minlength=len(rows))

    def best(positions: npt.NDArray[np.int64]) -> list[int]:
        order = positions[np.lexsort((tiebreak[positions], -score[positions], row[positions]))]
        counts = np.bincount(row[order], minlength=len(rows))
        starts = np.cumsum(counts) - counts
        return order[np.arange(len(order)) - starts[row[order]] < top].tolist()

    contenders = _contenders(row, per_row, score, top)
    assert best(contenders) == best(np.arange(len(score)))


@pytest.mark.model
def test_a_context_is_searched_with_the_sum_of_its_parts_vectors(
    retriever: Retriever, sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question's vector and the topic entry's indexed question vector, summed and
    normalised; the topic is never embedded, and the words searched are the joined parts."""
    plus = sample_kb.entry("pricing-plus")
    assert plus is not None and plus.question
    context = Context("how much is it per month?", plus.question, "pricing-plus")
    assert retriever.context_parts_to_embed(context) == ("how much is it per month?",)
    encode = sample_kb.embedder.encode
    embedded = _recording_encode(sample_kb, monkeypatch)
    searched: list[tuple[npt.NDArray[np.float32], str]] = []
    search = retriever.search

    def recorded(vector: npt.NDArray[np.float32], query: str, **kwargs: Any) -> Retrieval:
        searched.append((vector, query))
        return search(vector, query, **kwargs)

    monkeypatch.setattr(retriever, "search", recorded)
    result = retriever.retrieve_follow_up("and for business?", context, previous="pricing-plus")
    assert embedded == ["and for business?", "how much is it per month?"]
    ((_, alone), (vector, words)) = searched
    assert alone == "and for business?" and words == context.text
    topic = sample_kb.question_vector("pricing-plus")
    assert topic is not None
    summed = encode(["how much is it per month?"])[0] + topic
    np.testing.assert_allclose(vector, summed / np.linalg.norm(summed), atol=1e-6)
    assert result.query == f"{context.text} and for business?"
    assert _ids(result)[0] == "pricing-business"


def _recording_encode(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the texts the knowledge base's embedder is asked to embed; the list it fills."""
    embedded: list[str] = []
    encode = kb.embedder.encode

    def counted(texts: Sequence[str], **kwargs: Any) -> npt.NDArray[np.float32]:
        embedded.extend(texts)
        return encode(texts, **kwargs)

    monkeypatch.setattr(kb.embedder, "encode", counted)
    return embedded


def _ranked(retrieval: Retrieval) -> tuple[object, ...]:
    """What a retrieval found and how it scored it (not how long it took)."""
    return retrieval.query, retrieval.candidates, retrieval.features


@pytest.mark.model
def test_a_context_searched_ahead_gives_the_same_follow_up_without_searching_it_again(
    retriever: Retriever, sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    plus = sample_kb.entry("pricing-plus")
    assert plus is not None and plus.question
    contexts = [
        Context("how much is it per month?", plus.question, "pricing-plus"),
        Context("How much does the Plus plan cost?", "Plus plan pricing"),
        Context(None, plus.question, "pricing-plus"),  # nothing to embed: the index has it
    ]
    searched_words: list[str] = []
    search = retriever.search

    def recorded(vector: npt.NDArray[np.float32], query: str, **kwargs: Any) -> Retrieval:
        searched_words.append(query)
        return search(vector, query, **kwargs)

    monkeypatch.setattr(sample_kb.embedder, "at_hand", lambda text: True)
    for context in contexts:
        for text in ("and for business?", "is there a discount for a year?"):
            own = retriever.retrieve(text, depth=FOLLOW_UP_DEPTH)
            before = retriever.retrieve_follow_up(
                text, context, previous="pricing-plus", searched=own
            )
            ahead = retriever.search_context(context)
            assert ahead is not None and ahead.context == context
            monkeypatch.setattr(retriever, "search", recorded)
            after = retriever.retrieve_follow_up(
                text, context, previous="pricing-plus", searched=own, ahead=ahead
            )
            monkeypatch.setattr(retriever, "search", search)
            assert searched_words == []  # the context was not searched again
            assert _ranked(after) == _ranked(before)  # the same candidates, scores, features
    # Another context's search, or one without the message's own vector, is not taken.
    own = retriever.retrieve("and for business?", depth=FOLLOW_UP_DEPTH)
    other = retriever.search_context(contexts[1])
    monkeypatch.setattr(retriever, "search", recorded)
    retriever.retrieve_follow_up("and for business?", contexts[0], searched=own, ahead=other)
    assert searched_words == [contexts[0].text]
    searched_words.clear()
    retriever.retrieve_follow_up("and for business?", contexts[1], ahead=other)
    assert searched_words == ["and for business?", contexts[1].text]


@pytest.mark.model
def test_a_context_is_not_searched_ahead_when_a_part_needs_a_pass(
    retriever: Retriever, sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = _recording_encode(sample_kb, monkeypatch)
    context = Context("how much is it per month?", "Plus plan pricing")
    assert not sample_kb.embedder.at_hand("how much is it per month?")
    assert retriever.search_context(context) is None
    assert passes == []


@pytest.mark.model
def test_meanwhile_runs_only_while_the_vector_is_being_computed(
    retriever: Retriever,
    sample_kb: KnowledgeBase,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    expected = retriever.retrieve("How do I reset my password?")
    assert retriever.retrieve("How do I reset my password?", meanwhile=lambda: ran.append("x"))
    assert ran == []  # nothing pending: the vector is computed here
    monkeypatch.setattr(sample_kb.embedder, "pending", lambda text: True)
    result = retriever.retrieve("How do I reset my password?", meanwhile=lambda: ran.append("x"))
    assert ran == ["x"] and _ranked(result) == _ranked(expected)

    def broken() -> None:
        raise RuntimeError("the context is gone")

    with caplog.at_level(logging.WARNING, logger="knowledge.retriever"):
        result = retriever.retrieve("How do I reset my password?", meanwhile=broken)
    assert _ranked(result) == _ranked(expected)
    assert "work while waiting for a query vector failed" in caplog.text


@pytest.mark.model
def test_an_unknown_topic_entry_is_embedded_from_its_words(
    retriever: Retriever, sample_kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = Context("How much does Plus cost?", "Plus plan pricing", "no-such-entry")
    assert retriever.context_parts_to_embed(context) == context.parts
    assert retriever.context_parts_to_embed(Context(None, "Hi!")) == ("Hi!",)
    embedded = _recording_encode(sample_kb, monkeypatch)
    retriever.retrieve_follow_up("and for business?", context)
    assert embedded == ["and for business?", *context.parts]


def test_a_context_without_words_is_refused(retriever: Retriever) -> None:
    with pytest.raises(ValueError, match="question or a topic"):
        retriever.retrieve_follow_up("and for business?", Context(None, None))


@pytest.mark.model
def test_an_entry_s_question_vector_is_its_question_unit_s(sample_kb: KnowledgeBase) -> None:
    """The vector the index holds for an entry's question: the model's vector of that text."""
    plus = sample_kb.entry("pricing-plus")
    assert plus is not None and plus.question
    vector = sample_kb.question_vector("pricing-plus")
    assert vector is not None and vector.dtype == np.float32
    np.testing.assert_allclose(vector, sample_kb.embedder.encode([plus.question])[0], atol=1e-5)
    assert sample_kb.question_vector("no-such-entry") is None
