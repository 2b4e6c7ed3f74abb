"""Tests for knowledge.index: the FAISS dense index and the bm25s lexical index."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import KnowledgeError
from knowledge.index import DenseIndex, LexicalIndex, lexical_top
from tests.conftest import DATA
from tests.support import run_python

DIM = 384


def _unit_vectors(n: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _near(vectors: npt.NDArray[np.float32], noise: float, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    queries = vectors + noise * rng.normal(size=vectors.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> npt.NDArray[np.float32]:
    return _unit_vectors(400, seed=1)


# --- DenseIndex ------------------------------------------------------------------------------


def test_small_sets_use_an_exact_flat_index(corpus: npt.NDArray[np.float32]) -> None:
    index = DenseIndex.build(corpus)
    assert index.kind == "flat"
    assert len(index) == len(corpus)
    positions, scores = index.search(corpus[:10], 3)
    assert positions.shape == scores.shape == (10, 3)
    assert positions[:, 0].tolist() == list(range(10))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_flat_scores_are_exact_inner_products(corpus: npt.NDArray[np.float32]) -> None:
    queries = _near(corpus[:5], 0.3, seed=2)
    positions, scores = DenseIndex.build(corpus).search(queries, 5)
    exact = queries @ corpus.T
    for q in range(5):
        expected = np.argsort(-exact[q])[:5]
        assert positions[q].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[q], exact[q][expected], atol=1e-5)


def test_hnsw_agrees_with_exact_search_for_most_queries(corpus: npt.NDArray[np.float32]) -> None:
    hnsw = DenseIndex.build(corpus, hnsw_threshold=0)
    flat = DenseIndex.build(corpus)
    assert hnsw.kind == "hnsw"
    assert len(hnsw) == len(corpus)
    queries = np.concatenate([_near(corpus[:60], 0.08, seed=3), _unit_vectors(40, seed=4)])
    h_pos, h_scores = hnsw.search(queries, 5)
    f_pos, _ = flat.search(queries, 5)
    agreement = float((h_pos[:, 0] == f_pos[:, 0]).mean())
    assert agreement >= 0.9
    # Near-duplicates of indexed vectors are found exactly.
    assert (h_pos[:60, 0] == np.arange(60)).mean() >= 0.95
    np.testing.assert_allclose(h_scores, np.einsum("qd,qkd->qk", queries, corpus[h_pos]), atol=1e-4)


def test_threshold_decides_the_kind(corpus: npt.NDArray[np.float32]) -> None:
    assert DenseIndex.build(corpus, hnsw_threshold=len(corpus)).kind == "flat"
    assert DenseIndex.build(corpus, hnsw_threshold=len(corpus) - 1).kind == "hnsw"


@pytest.mark.parametrize("threshold", [0, 10_000], ids=["hnsw", "flat"])
def test_save_and_load_round_trip(
    corpus: npt.NDArray[np.float32], tmp_path: Path, threshold: int
) -> None:
    index = DenseIndex.build(corpus, hnsw_threshold=threshold)
    index.save(tmp_path)
    assert (tmp_path / DenseIndex.FILENAME).exists()
    queries = _near(corpus[:20], 0.1, seed=5)
    for mmap in (True, False):
        loaded = DenseIndex.load(tmp_path, mmap=mmap)
        assert loaded.kind == index.kind
        assert len(loaded) == len(index)
        before_pos, before_scores = index.search(queries, 4)
        after_pos, after_scores = loaded.search(queries, 4)
        assert np.array_equal(before_pos, after_pos)
        np.testing.assert_allclose(before_scores, after_scores, atol=1e-6)
        # A unit's stored vector reads back as built (a follow-up's topic, `question_vector`).
        for position in (0, 17, len(corpus) - 1):
            np.testing.assert_array_equal(loaded.vector(position), corpus[position])


def test_k_larger_than_the_index_returns_every_vector_once() -> None:
    vectors = _unit_vectors(7, seed=6)
    positions, scores = DenseIndex.build(vectors).search(vectors[:2], 50)
    assert positions.shape == (2, 7)
    assert sorted(positions[0].tolist()) == list(range(7))
    assert (positions >= 0).all()
    assert positions.dtype == np.int64 and scores.dtype == np.float32


def test_an_empty_index_returns_missing_hits() -> None:
    index = DenseIndex.build(np.zeros((0, DIM), dtype=np.float32))
    assert len(index) == 0
    positions, scores = index.search(_unit_vectors(3, seed=7), 5)
    assert positions.shape == (3, 1) and (positions == -1).all()
    assert (scores == 0).all()


# --- LexicalIndex ----------------------------------------------------------------------------

UNITS = [
    "How do I reset my password?",
    "Export a note as a PDF document",
    "Import your notebooks from Evernote (.enex files)",
    "Passwords and password managers",
    "Single sign-on with SAML and SCIM provisioning",
]


@pytest.fixture(scope="module")
def lexical() -> LexicalIndex:
    return LexicalIndex.build(UNITS)


def test_scores_cover_every_unit_and_favour_matching_ones(lexical: LexicalIndex) -> None:
    assert len(lexical) == len(UNITS)
    scores = lexical.scores("reset password")
    assert scores.shape == (len(UNITS),) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == 0
    assert scores[3] > 0  # "passwords" is stemmed to the same word
    assert scores[1] == scores[2] == scores[4] == 0


def test_stemming_and_case_are_ignored(lexical: LexicalIndex) -> None:
    assert int(np.argmax(lexical.scores("EXPORTING pdfs"))) == 1
    assert int(np.argmax(lexical.scores("evernote"))) == 2


@pytest.mark.parametrize("query", ["zzzqqq blorf", "", "   ", "the and of", "?!"])
def test_unknown_words_and_stopwords_score_zero(lexical: LexicalIndex, query: str) -> None:
    scores = lexical.scores(query)
    assert scores.shape == (len(UNITS),)
    assert not scores.any()
    positions, hit_scores = lexical.search(query, 3)
    assert positions.size == 0 and hit_scores.size == 0


def test_known_words_still_count_beside_unknown_ones(lexical: LexicalIndex) -> None:
    assert int(np.argmax(lexical.scores("zzzqqq saml"))) == 4


@pytest.mark.parametrize(
    "query", ["reset password", "password password reset", "SAML sign-on notes", "pdf"]
)
def test_scores_are_bm25s_scores(lexical: LexicalIndex, query: str) -> None:
    """The one-bincount sum gives bm25s's own scores, repeated words counted each time."""
    assert lexical._library is not None
    expected = lexical._library[0].get_scores(_bm25s_ids(lexical, [query])[0])
    np.testing.assert_allclose(lexical.scores(query), expected, rtol=1e-6)
    assert lexical.scores(query).any()
    for one, many in zip(
        [lexical.scores(q) for q in (query, "evernote", "zzzqqq")],
        lexical.scores_many([query, "evernote", "zzzqqq"]),
        strict=True,
    ):
        np.testing.assert_array_equal(one, many)


def test_search_returns_only_positive_hits_best_first(lexical: LexicalIndex) -> None:
    positions, scores = lexical.search("password", 10)
    assert sorted(positions.tolist()) == [0, 3]
    assert (np.diff(scores) <= 0).all()
    assert (scores > 0).all()
    top_one, _ = lexical.search("password", 1)
    assert top_one.tolist() == [positions[0]]


def test_lexical_save_and_load_round_trip(lexical: LexicalIndex, tmp_path: Path) -> None:
    lexical.save(tmp_path)
    assert (tmp_path / LexicalIndex.DIRNAME).is_dir()
    loaded = LexicalIndex.load(tmp_path, len(UNITS))
    assert len(loaded) == len(UNITS)
    for query in ("reset password", "SAML", "evernote enex", "zzzqqq"):
        np.testing.assert_allclose(loaded.scores(query), lexical.scores(query), rtol=1e-6)
    assert loaded.search("pdf", 3)[0].tolist() == [1]
    with pytest.raises(ValueError, match="only an index built here"):
        loaded.save(tmp_path / "again")


def test_an_index_saved_without_the_stems_file_loads_from_bm25s_vocabulary(
    lexical: LexicalIndex, tmp_path: Path
) -> None:
    """Indexes built before the stems file existed read bm25s's tokenizer vocabulary."""
    lexical.save(tmp_path)
    (tmp_path / LexicalIndex.DIRNAME / LexicalIndex.STEMS).unlink()
    loaded = LexicalIndex.load(tmp_path, len(UNITS))
    for query in ("reset password", "SAML", "evernote enex", "zzzqqq", "the"):
        np.testing.assert_array_equal(loaded.scores(query), lexical.scores(query))


def test_a_stems_file_that_does_not_fit_the_weights_is_refused(
    lexical: LexicalIndex, tmp_path: Path
) -> None:
    """Say, a stems file from another build: a word id past the weights would fail searches."""
    lexical.save(tmp_path)
    stems = tmp_path / LexicalIndex.DIRNAME / LexicalIndex.STEMS
    stems.write_text(json.dumps([*json.loads(stems.read_text()), "zzzqqq"]), encoding="utf-8")
    with pytest.raises(KnowledgeError, match="inconsistent"):
        LexicalIndex.load(tmp_path, len(UNITS))


def test_a_loaded_index_searches_without_importing_bm25s_or_scipy(
    lexical: LexicalIndex, tmp_path: Path
) -> None:
    """Their imports took 0.35 s of every worker's start (docs/benchmarks.md, "Sixteenth
    round"); only a build needs bm25s."""
    lexical.save(tmp_path)
    script = f"""
import sys
from pathlib import Path
from knowledge.index import LexicalIndex
index = LexicalIndex.load(Path({str(tmp_path)!r}), {len(UNITS)})
assert index.search("reset my password", 3)[0].tolist()[0] == 0
print(sorted(m for m in ("bm25s", "scipy") if m in sys.modules))
"""
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_saved_index_loads_in_bm25s_too(lexical: LexicalIndex, tmp_path: Path) -> None:
    import bm25s

    lexical.save(tmp_path)
    retriever = bm25s.BM25.load(str(tmp_path / LexicalIndex.DIRNAME))
    assert retriever.scores["indptr"].size == len(lexical._words.stem_ids) + 1  # type: ignore[union-attr]


def test_an_empty_lexical_index_scores_nothing() -> None:
    empty = LexicalIndex(weights=None, words=None, size=0)
    assert empty.scores("anything").size == 0
    positions, scores = empty.search("anything", 5)
    assert positions.size == 0 and scores.size == 0


@pytest.mark.parametrize(
    "filler", ["Is it?", "🙂", "the and of"], ids=["stopwords", "emoji", "more-stopwords"]
)
def test_unknown_words_score_zero_even_beside_a_stopword_only_unit(
    filler: str, tmp_path: Path
) -> None:
    index = LexicalIndex.build([*UNITS, filler])
    assert not index.scores("zzzqqq").any()
    assert index.search("what is this?", 5)[0].size == 0
    # bm25s gives such an index a column more than it has stems; it saves and loads.
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path, len(UNITS) + 1)
    for query in ("zzzqqq", "what is this?", "reset password", filler):
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))


def test_lexical_top_takes_the_best_positive_scores_with_ties_by_position() -> None:
    scores = np.array([0.0, 2.0, 5.0, 2.0, 0.0, 2.0, 7.0, -1.0], dtype=np.float32)
    assert lexical_top(scores, 3).tolist() == [6, 2, 1]  # of the three 2.0s, the first
    assert lexical_top(scores, 4).tolist() == [6, 2, 1, 3]
    assert lexical_top(scores, 100).tolist() == [6, 2, 1, 3, 5]  # never a zero or below
    assert lexical_top(scores, 0).tolist() == []
    assert lexical_top(np.zeros(5, dtype=np.float32), 3).tolist() == []
    rng = np.random.default_rng(3)
    many = rng.integers(0, 4, 5000).astype(np.float32)  # many ties, many zeros
    expected = sorted((-s, u) for u, s in enumerate(many.tolist()) if s > 0)[:100]
    assert lexical_top(many, 100).tolist() == [u for _, u in expected]


def test_the_memo_of_stems_stays_bounded() -> None:
    """Every word a query has is remembered; made-up words must not grow a worker for ever."""
    index = LexicalIndex.build(UNITS, memo_limit=50)
    words = index._words
    assert words is not None
    expected = index.scores("How do I reset my password?")
    rng = np.random.default_rng(0)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    sizes = []
    for _ in range(20):
        junk = ["".join(rng.choice(letters, 9)) for _ in range(30)]
        index.scores_many([" ".join(junk), f"resetting {junk[0]}s"])
        sizes.append(len(words._memo))
        assert sizes[-1] <= 50
    assert any(b < a for a, b in itertools.pairwise(sizes))  # started again, more than once
    # The same words still score the same.
    assert np.array_equal(index.scores("How do I reset my password?"), expected)
    assert np.array_equal(index.scores("resetting"), index.scores("reset"))


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=300),
    st.lists(st.integers(0, 299), max_size=120),
    st.integers(0, 40),
)
def test_likely_units_never_change_lexical_top(
    scores: list[int], likely: list[int], k: int
) -> None:
    # Small integer scores: many zeros and many ties at the cut.
    values = np.asarray(scores, dtype=np.float32)
    units = np.asarray([u for u in likely if u < len(scores)], dtype=np.int64)
    assert np.array_equal(lexical_top(values, k, units), lexical_top(values, k))


def test_top_many_is_lexical_top_of_the_scores() -> None:
    """Over enough units that the rarest words' floor cuts: ties, repeats, stopwords."""
    rng = np.random.default_rng(5)
    words = ["card", "cards", "refund", "top", "up", "pin", "fee", "transfer", "declined"]
    rare = ["apple", "pay", "exchange", "rate", "atm", "virtual", "lost", "stolen"]
    texts = [
        " ".join([*rng.choice(words, rng.integers(1, 6)), *rng.choice(rare, rng.integers(0, 2))])
        for _ in range(1_500)
    ]
    index = LexicalIndex.build(texts)
    queries = [
        "my card was declined",
        "apple pay top up top up",  # a repeated word counts twice
        "lost or stolen card, what fee?",
        "exchange rate",
        "the of and",  # stopwords only
        "zzzqqq",
        "",
        *[" ".join(rng.choice(words + rare, 4)) for _ in range(60)],
    ]
    for k in (1, 20, 100, 5_000):
        got = index.top_many(queries, k)
        for query, scores, (units, values) in zip(
            queries, index.scores_many(queries), got, strict=True
        ):
            expected = lexical_top(scores, k)
            assert np.array_equal(units, expected), (query, k)
            assert np.array_equal(values, scores[expected])
            assert np.array_equal(units, index.search(query, k)[0])


def _bm25s_ids(index: LexicalIndex, queries: list[str]) -> list[list[int]]:
    """The queries' word ids as bm25s's own tokenizer gives them, the empty token left out."""
    assert index._library is not None
    tokenizer = index._library[1]
    ids = tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
    empty = tokenizer.get_vocab_dict().get("")
    return [[t for t in one if t != empty] for one in ids]


def test_query_words_are_bm25s_tokenize_ids() -> None:
    index = LexicalIndex.build(UNITS)
    queries = ["How do I RESET my passwords?", "", "the and of", "🙂 zzzqqq", "pdf pdf note"]
    assert index._words is not None
    assert index._words.ids(queries) == _bm25s_ids(index, queries)
    assert index._words.ids(["How do I RESET my passwords?"]) != [[]]


_WORDS = sorted({w for unit in UNITS for w in unit.split()} | {"the", "Passwords", "É", "ß"})


@given(
    st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=12)), max_size=12).map(" ".join)
)
def test_query_words_equal_bm25s_on_any_text(lexical: LexicalIndex, query: str) -> None:
    assert lexical._words is not None
    assert lexical._words.ids([query]) == _bm25s_ids(lexical, [query])


def test_query_words_equal_bm25s_on_banking77(tmp_path: Path) -> None:
    """Real customers' words: BANKING77's training queries indexed, its test queries asked,
    through a saved and loaded index as a worker reads it."""
    data = DATA / "banking77"
    with (data / "train.csv").open(encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    with (data / "test.csv").open(encoding="utf-8") as f:
        queries = [row["text"] for row in csv.DictReader(f)]
    built = LexicalIndex.build(texts[:4000])
    expected = _bm25s_ids(built, queries)
    assert sum(map(len, expected)) > len(queries)  # most queries share words with the index
    assert built._words is not None
    assert built._words.ids(queries) == expected
    built.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path, len(built))
    assert loaded._words is not None
    assert loaded._words.ids(queries) == expected
