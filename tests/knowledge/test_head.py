"""The linear head over the entries' examples (`knowledge.head`) and its part in the ranking."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from knowledge.base import KnowledgeBase
from knowledge.embeddings import Embedder
from knowledge.head import FILENAME, EntryHead, HeadConfig
from knowledge.retriever import Retriever
from knowledge.types import Entry

ENTRIES = [
    Entry(
        id="card-lost",
        question="I lost my card",
        answer="Freeze the card in the app, then order a new one under Cards.",
        examples=(
            "my card is gone",
            "can't find my debit card anywhere",
            "I think someone stole my card",
            "misplaced my bank card yesterday",
            "what do I do if my card went missing",
        ),
    ),
    Entry(
        id="refund",
        question="How do I get a refund?",
        answer="Open the payment in the app and tap Request refund.",
        examples=(
            "I want my money back for an order",
            "the shop owes me a refund",
            "how long does a refund take",
            "refund still not in my account",
            "can I cancel a purchase and get the money back",
        ),
    ),
    Entry(
        id="exchange-rate",
        question="What exchange rate do you use?",
        answer="We use the interbank rate with no markup on weekdays.",
        examples=(
            "is the currency conversion rate fair",
            "why was I charged extra for paying in euros",
            "what rate do I get abroad",
            "how do you convert dollars to pounds",
            "foreign exchange fees",
        ),
    ),
]


def _clustered(rng: np.random.Generator, entries: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one random centre per entry, labelled with their entry."""
    centres = rng.normal(size=(entries, 16))
    vectors = np.repeat(centres, per, axis=0) + 0.3 * rng.normal(size=(entries * per, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat(np.arange(entries), per).astype(np.int32)


def test_the_head_learns_which_entry_a_vector_belongs_to() -> None:
    rng = np.random.default_rng(0)
    vectors, labels = _clustered(rng, 4, 12)
    head = EntryHead.fit(vectors, labels, np.ones(len(labels), dtype=bool), 5)
    assert head is not None and head.entries == 5
    probabilities = head.probabilities(vectors)
    assert probabilities.shape == (48, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(axis=1) == labels).all()
    # Entry 4 has no unit: it can never be the answer.
    assert probabilities[:, 4].max() < 1e-12


def test_two_entries_get_a_probability_each() -> None:
    rng = np.random.default_rng(1)
    vectors, labels = _clustered(rng, 2, 10)
    head = EntryHead.fit(vectors, labels, np.ones(20, dtype=bool), 2, HeadConfig(min_entries=2))
    assert head is not None
    probabilities = head.probabilities(vectors)
    assert (probabilities.argmax(axis=1) == labels).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_a_large_entry_does_not_draw_every_question() -> None:
    """Entries weigh the same, however many examples they list (a declining entry may list
    thousands): a question nearer a small entry's examples than a large one's goes to the
    small one (fitted with every example weighing the same, the large one would take it)."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(2, 16))
    big = centres[0] + 0.8 * rng.normal(size=(400, 16))
    small = centres[1] + 0.8 * rng.normal(size=(8, 16))
    vectors = np.vstack([big, small])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.asarray([0] * 400 + [1] * 8, dtype=np.int32)
    head = EntryHead.fit(
        vectors.astype(np.float32), labels, np.ones(408, dtype=bool), 2, HeadConfig(min_entries=2)
    )
    assert head is not None
    nearer_small = 0.4 * centres[0] + 0.6 * centres[1]
    nearer_small /= np.linalg.norm(nearer_small)
    assert head.probabilities(nearer_small[None, :].astype(np.float32))[0].argmax() == 1


@pytest.mark.parametrize(
    ("entries", "per", "config"),
    [
        (2, 10, HeadConfig()),  # too few entries
        (4, 3, HeadConfig()),  # too few questions per entry
        (6, 10, HeadConfig(max_entries=5)),  # too many entries to fit at ingest
    ],
)
def test_no_head_where_there_is_too_little_to_learn(
    entries: int, per: int, config: HeadConfig
) -> None:
    vectors, labels = _clustered(np.random.default_rng(3), entries, per)
    assert EntryHead.fit(vectors, labels, np.ones(len(labels), dtype=bool), entries, config) is None


def test_units_of_one_entry_alone_give_no_head() -> None:
    vectors, _ = _clustered(np.random.default_rng(6), 3, 6)
    one = np.zeros(18, dtype=np.int32)
    assert EntryHead.fit(vectors, one, np.ones(18, dtype=bool), 3) is None


def test_passages_do_not_count_as_questions() -> None:
    vectors, labels = _clustered(np.random.default_rng(4), 3, 6)
    questions = np.zeros(len(labels), dtype=bool)
    questions[::2] = True  # 3 questions an entry: fewer than `min_questions`
    assert EntryHead.fit(vectors, labels, questions, 3) is None
    assert EntryHead.fit(vectors, labels, ~questions | questions, 3) is not None


def test_a_stored_head_loads_only_for_its_entries(tmp_path: Path) -> None:
    vectors, labels = _clustered(np.random.default_rng(5), 3, 6)
    head = EntryHead.fit(vectors, labels, np.ones(18, dtype=bool), 3)
    assert head is not None
    head.save(tmp_path)
    loaded = EntryHead.load(tmp_path, 3)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.probabilities(vectors), head.probabilities(vectors))
    assert EntryHead.load(tmp_path, 4) is None
    assert EntryHead.load(tmp_path / "missing", 3) is None


# -- in the knowledge base and the ranking (real model) ---------------------------------------


@pytest.fixture(scope="module")
def head_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> KnowledgeBase:
    kb = KnowledgeBase(tmp_path_factory.mktemp("head-kb"), embedder)
    kb.ingest(ENTRIES, replace_all=True)
    return kb


@pytest.mark.model
def test_an_ingest_with_enough_examples_fits_a_head(head_kb: KnowledgeBase) -> None:
    assert (head_kb.directory / FILENAME).exists()
    assert head_kb.head is not None and head_kb.head.entries == len(ENTRIES)
    assert head_kb.stats()["head"] is True


@pytest.mark.model
def test_the_sample_knowledge_base_has_no_head(sample_kb: KnowledgeBase) -> None:
    """2.9 questions an entry: too few to learn from, so it ranks as it always did."""
    assert sample_kb.head is None
    assert not (sample_kb.directory / FILENAME).exists()


@pytest.mark.model
def test_the_heads_probability_adds_to_each_entrys_score(head_kb: KnowledgeBase) -> None:
    with_head = Retriever(head_kb)
    without = Retriever(head_kb, replace(with_head.config, head_weight=0.0))
    assert head_kb.head is not None
    for text in ("somebody took my card", "money back please", "euro conversion fee"):
        vector = with_head.embed(text)
        probabilities = head_kb.head.probabilities(vector[None, :])[0]
        plain = {c.entry.id: c.score for c in without.search(vector, text, top=3).candidates}
        for candidate in with_head.search(vector, text, top=3).candidates:
            position = head_kb.position(candidate.entry.id)
            assert position is not None
            expected = plain[candidate.entry.id] + 2.0 * probabilities[position]
            assert candidate.score == pytest.approx(expected, abs=1e-9)


@pytest.mark.model
def test_the_heads_likeliest_entries_compete_unfound(head_kb: KnowledgeBase) -> None:
    """With one dense hit and no shared word, only the head brings the other entries in."""
    narrow = Retriever(head_kb, replace(Retriever(head_kb).config, dense_k=1))
    text = "somebody took it from my wallet"
    result = narrow.search(narrow.embed(text), text, top=5)
    assert {c.entry.id for c in result.candidates} == {e.id for e in ENTRIES}
    hidden = head_kb.position("refund")
    assert hidden is not None
    excluded = narrow.search(narrow.embed(text), text, top=5, exclude_entries=[hidden])
    assert "refund" not in {c.entry.id for c in excluded.candidates}
