"""Search indexes over retrieval units: FAISS for vectors, BM25 (built by bm25s) for words.

Both map a query to `(unit position, score)` pairs; `knowledge.retriever` fuses them and maps units
back to knowledge-base entries. Each index saves to and loads from a directory.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.errors import KnowledgeError

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Hits = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]

#: Up to this many vectors an exact flat index is used; above it, HNSW. Measured with
#: `bench/index_size.py --real` (docs/benchmarks.md, "Exact versus HNSW search"): on the model's
#: own vectors of BANKING77 questions, exact search over 20,000 takes about 1.2 ms on a 2-core
#: machine and HNSW 0.08 ms with the same top hit for 99.8% of queries, for 2 s of build time.
#: (Random vectors, which have no clusters to navigate, make HNSW look far worse than it is.)
HNSW_THRESHOLD = 10_000
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 80


def lexical_top(
    scores: npt.NDArray[np.float32],
    k: int,
    likely: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """The (at most) `k` units with the highest positive BM25 scores, best first; ties go to
    the lower unit position, at the cut too, so the choice never depends on the sort.

    Only the units that share a word with the query are looked at, which is cheaper than
    partitioning every score (0.18 → 0.10 ms a query on 20,000 BANKING77 units, where a
    question shares a word with about half of them; far less where fewer do).

    `likely`, units expected to score well (any, repeats allowed; `LexicalIndex.top_many`
    passes those of the query's rarest words), narrows that further without changing the
    result: when `k` or more of them score above zero, their `k`-th best score is at most the
    `k`-th best of all, so only the units reaching it are looked at (a median of 230 instead
    of 11,600 on the BANKING77 units).
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    hit = None
    if likely is not None and likely.size >= k:
        sample = scores[merged_unique([likely])]
        if sample.size >= k:
            floor = np.partition(sample, sample.size - k)[sample.size - k]
            if floor > 0:
                hit = np.flatnonzero(scores >= floor)
    if hit is None:
        hit = np.flatnonzero(scores > 0)
    values = scores[hit]
    if hit.size > k:
        cut = np.partition(values, hit.size - k)[hit.size - k]  # the k-th highest score
        above = np.flatnonzero(values > cut)
        tied = np.flatnonzero(values == cut)[: k - above.size]
        chosen = np.concatenate([above, tied])
        hit, values = hit[chosen], values[chosen]
    return hit[np.lexsort((hit, -values))].astype(np.int64)


def merged_unique(parts: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The distinct values of `parts`, sorted, as `np.unique` of their concatenation gives them.

    The parts are mostly sorted already (the fusion's dense and lexical keys come out of
    `np.unique`; a word's units are sorted), and a stable sort (timsort) merges sorted runs in
    linear time where `np.unique`'s quicksort starts over: 200 → 8 µs for the 3,600 keys of a
    pass of 16.
    """
    keys = np.sort(np.concatenate(parts), kind="stable")
    first = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _rarest(postings: Sequence[npt.NDArray[np.int64]], k: int) -> npt.NDArray[np.int64]:
    """The units of the rarest words, rarest first, until there are `k` or more (repeats
    counted); all of them when there are fewer."""
    taken: list[npt.NDArray[np.int64]] = []
    total = 0
    for units in sorted(postings, key=len):
        taken.append(units)
        total += units.size
        if total >= k:
            break
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


class DenseIndex:
    """Inner-product search over L2-normalised vectors (exact, or HNSW for large sets)."""

    FILENAME = "dense.faiss"

    def __init__(self, index: Any, kind: str) -> None:
        import faiss

        # One query at a time: splitting a single search over OpenMP threads costs more than it
        # saves (0.84 → 0.59 ms median over 10,000 vectors on 2 cores) and its spinning threads
        # steal time from the model. Concurrency comes from serving several requests instead.
        faiss.omp_set_num_threads(1)
        self._index = index
        self.kind = kind

    @classmethod
    def build(cls, vectors: Vectors, *, hnsw_threshold: int = HNSW_THRESHOLD) -> DenseIndex:
        import faiss

        n, dim = vectors.shape
        index: Any
        # One thread: HNSW inserts in parallel build a different graph on every run.
        faiss.omp_set_num_threads(1)
        if n > hnsw_threshold:
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
            kind = "hnsw"
        else:
            index = faiss.IndexFlatIP(dim)
            kind = "flat"
        if n:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, kind)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def vector(self, position: int) -> npt.NDArray[np.float32]:
        """The stored vector of one unit (from the mapped file when memory-mapped)."""
        return np.asarray(self._index.reconstruct(int(position)), dtype=np.float32)

    def search(self, queries: Vectors, k: int) -> Hits:
        """Top-k units per query: (positions, scores), each of shape (len(queries), k).

        Missing hits (fewer than k vectors) have position -1.
        """
        k = max(1, min(k, len(self)))
        if len(self) == 0:
            empty = np.full((len(queries), 1), -1, dtype=np.int64)
            return empty, np.zeros((len(queries), 1), dtype=np.float32)
        scores, positions = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return positions.astype(np.int64), scores.astype(np.float32)

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(directory / self.FILENAME))

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = True) -> DenseIndex:
        """Read a saved index; with `mmap`, its vectors stay in the file, mapped into memory.

        `IO_FLAG_MMAP` alone maps only IVF lists; flat and HNSW vectors need
        `IO_FLAG_MMAP_IFC` (faiss ≥ 1.9). Mapped, a 100,000-vector index loads in milliseconds
        instead of reading 150 MB, and its pages are shared by every worker on the machine and
        can be dropped by the kernel under memory pressure (docs/benchmarks.md, "Hot path").
        """
        import faiss

        flags = 0
        if mmap:
            flags = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY
        index: Any = faiss.read_index(str(directory / cls.FILENAME), flags)
        kind = "hnsw" if isinstance(index, faiss.IndexHNSW) else "flat"
        if kind == "hnsw":
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(index, kind)


class QueryWords:
    """A query's words as the lexical index's word ids: what bm25s's tokenizer gives for a
    query (`Tokenizer.streaming_tokenize` with ``update_vocab=False``), without bm25s.

    Importing bm25s imports SciPy's sparse matrices, and its tokenizer's saved vocabulary holds
    three dictionaries of every indexed word: on 100,000 passages that is 0.35 s of imports and
    0.4 s of JSON at every start (docs/benchmarks.md, "Sixteenth round"). A query needs only
    the stems' ids; the rest is a memo of the stemmer. The steps are bm25s's, in its order:
    lower-case, its default word pattern (two or more word characters), drop stopwords, stem
    with PyStemmer's English stemmer, keep the words whose stem is indexed.
    `tests/knowledge/test_index.py` checks that the ids equal bm25s's own.

    Args:
        stem_ids: each indexed stem's id (bm25s's ``stem_to_sid``).
        stopwords: the words the index left out.
        memo_limit: how many words the memo of stems may hold before it starts again.
    """

    #: bm25s's default splitter (`bm25s.tokenization.Tokenizer`).
    PATTERN = re.compile(r"(?u)\b\w\w+\b")

    def __init__(
        self, stem_ids: dict[str, int], stopwords: Iterable[str], *, memo_limit: int
    ) -> None:
        self.stem_ids = stem_ids
        self.stopwords = frozenset(stopwords)
        self.memo_limit = memo_limit
        # Each word seen → its id, or -1: a stopword, a word whose stem is not indexed, or
        # the stem "" (the id bm25s gives documents without words).
        self._memo: dict[str, int] = {}
        self._empty = stem_ids.get("")
        self._stem: Callable[[str], str] | None = None
        # PyStemmer's stemmers are not thread-safe, and the retriever's lanes and the web
        # app's threads search at once (`Retriever.retrieve_many`).
        self._lock = threading.Lock()

    def ids(self, queries: Sequence[str]) -> list[list[int]]:
        """Each query's known words' ids, in order, repeats kept."""
        with self._lock:
            return [self._ids(query) for query in queries]

    def _ids(self, query: str) -> list[int]:
        memo = self._memo
        out: list[int] = []
        for word in self.PATTERN.findall(query.lower()):
            wid = memo.get(word)
            if wid is None:
                wid = self._look_up(word)
                if len(memo) >= self.memo_limit:
                    memo.clear()  # customers' made-up words must not grow a worker for ever
                memo[word] = wid
            if wid >= 0:
                out.append(wid)
        return out

    def _look_up(self, word: str) -> int:
        if word in self.stopwords:
            return -1
        if self._stem is None:
            import Stemmer

            self._stem = Stemmer.Stemmer("english").stemWord
        wid = self.stem_ids.get(self._stem(word), -1)
        return -1 if wid == self._empty else wid


class LexicalIndex:
    """BM25 over the same units as the dense index (English stopwords, Snowball stemming).

    bm25s builds it (`build`) and its files are bm25s's own, so an index saved here loads in
    bm25s too; a search reads only the weights and the stems' ids (`QueryWords`).

    Args:
        weights: bm25s's eager index, one column of BM25 weights per word id: the units
            (``indices``) and their weights (``data``) of word ``t`` are at
            ``indptr[t]:indptr[t + 1]``.
        words: maps a query to its word ids.
        size: the number of units.
        library: bm25s's index and tokenizer, on an index `build` made (what `save` writes).
    """

    DIRNAME = "bm25"
    #: The stems in id order, written beside bm25s's files: its tokenizer vocabulary
    #: (``vocab.tokenizer.json``) also holds every indexed word twice over.
    STEMS = "stems.json"
    #: bm25s's files of the weights and the stopwords.
    ARRAYS = ("data", "indices", "indptr")
    STOPWORDS = "stopwords.tokenizer.json"
    #: Words the query tokenizer remembers the stem of before it starts again.
    MEMO_LIMIT = 50_000

    def __init__(
        self,
        weights: dict[str, npt.NDArray[Any]] | None,
        words: QueryWords | None,
        size: int,
        *,
        library: tuple[Any, Any] | None = None,
    ) -> None:
        self._weights = weights
        self._words = words
        self._size = size
        self._library = library

    @staticmethod
    def _tokenizer_factory() -> Any:
        import Stemmer
        from bm25s.tokenization import Tokenizer

        return Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))

    @classmethod
    def build(cls, texts: Sequence[str], *, memo_limit: int = MEMO_LIMIT) -> LexicalIndex:
        import bm25s

        tokenizer = cls._tokenizer_factory()
        ids = tokenizer.tokenize(list(texts), return_as="ids", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(ids, show_progress=False)
        words = QueryWords(dict(tokenizer.stem_to_sid), tokenizer.stopwords, memo_limit=memo_limit)
        return cls(retriever.scores, words, len(texts), library=(retriever, tokenizer))

    def __len__(self) -> int:
        return self._size

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 score of every unit for the query (zeros when no query word is known)."""
        return self.scores_many([query])[0]

    def scores_many(self, queries: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        """`scores` for several queries, tokenized in one call.

        A unit's score is the sum of the query words' precomputed BM25 weights for it (bm25s's
        eager index: one column of weights per word; its default Lucene variant gives absent
        words nothing), a word counted as often as the query says it. The sum is taken in
        float64 by one `np.bincount` over the words' columns put end to end, then rounded to
        float32: a little faster than bm25s's `get_scores`, which adds word by word in float32
        (0.102 against 0.111 ms a query, tokenizing included, on the 20,000 units of the
        10,000-entry BANKING77 base, measured interleaved), and within 2e-6 of it there.
        """
        return [scores for scores, _ in self._scored(queries)]

    def top_many(self, queries: Sequence[str], k: int) -> list[Hits]:
        """`search` for several queries: each one's best `k` units with a positive score.

        The same units as `lexical_top` of `scores_many`, found with less work: the units of
        the query's rarest words, which have its highest scores, bound the `k`-th best score
        from below (`lexical_top`'s `likely`).
        """
        out: list[Hits] = []
        for scores, postings in self._scored(queries):
            top = lexical_top(scores, k, _rarest(postings, k))
            out.append((top, scores[top]))
        return out

    def _scored(
        self, queries: Sequence[str]
    ) -> list[tuple[npt.NDArray[np.float32], list[npt.NDArray[np.int64]]]]:
        """Each query's `scores`, with the units of each of its known words (repeats kept)."""
        if self._size == 0 or self._weights is None or self._words is None:
            return [(np.zeros(0, dtype=np.float32), []) for _ in queries]
        if not queries:
            return []
        weights = self._weights
        data, units, starts = weights["data"], weights["indices"], weights["indptr"]
        out: list[tuple[npt.NDArray[np.float32], list[npt.NDArray[np.int64]]]] = []
        # Unknown words and stopwords are left out: the empty token that units without any
        # indexable word carry would make "the" match "Is it?" perfectly.
        for known in self._words.ids(queries):
            if not known:
                out.append((np.zeros(self._size, dtype=np.float32), []))
                continue
            spans = [slice(starts[t], starts[t + 1]) for t in known]
            postings = [units[span] for span in spans]
            scores = np.bincount(
                np.concatenate(postings),
                weights=np.concatenate([data[span] for span in spans]),
                minlength=self._size,
            ).astype(np.float32)
            out.append((scores, postings))
        return out

    def search(self, query: str, k: int) -> Hits:
        """Top-k units with a positive BM25 score, best first."""
        return self.top_many([query], k)[0]

    def save(self, directory: Path) -> None:
        """Write an index `build` made: bm25s's files, and the stems in id order."""
        if self._library is None or self._words is None:
            raise ValueError("only an index built here can be saved; a loaded one is on disk")
        retriever, tokenizer = self._library
        path = directory / self.DIRNAME
        path.mkdir(parents=True, exist_ok=True)
        retriever.save(str(path))
        tokenizer.save_vocab(str(path))
        tokenizer.save_stopwords(str(path))
        stems = sorted(self._words.stem_ids, key=self._words.stem_ids.__getitem__)
        if [self._words.stem_ids[stem] for stem in stems] != list(range(len(stems))):
            raise ValueError("bm25s numbered the stems with gaps; the stems file needs 0..n-1")
        (path / self.STEMS).write_text(json.dumps(stems, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, size: int) -> LexicalIndex:
        """Read a saved index: the weights memory-mapped, the stems' ids, the stopwords.

        An index saved before the stems file existed takes them from bm25s's tokenizer
        vocabulary, which is slower to read.
        """
        path = directory / cls.DIRNAME
        # Plain array views of the mapped files: still mapped, but slicing a `np.memmap` costs
        # a subclass object per slice, about a quarter of a query's BM25 time.
        weights = {
            name: np.asarray(np.load(path / f"{name}.csc.index.npy", mmap_mode="r"))
            for name in cls.ARRAYS
        }
        stems_file = path / cls.STEMS
        if stems_file.exists():
            stems = json.loads(stems_file.read_text(encoding="utf-8"))
            stem_ids = dict(zip(stems, range(len(stems)), strict=True))
        else:
            vocabulary = json.loads((path / "vocab.tokenizer.json").read_text(encoding="utf-8"))
            stem_ids = vocabulary["stem_to_sid"]
        stopwords = json.loads((path / cls.STOPWORDS).read_text(encoding="utf-8"))
        # bm25s may add a last column for its empty token, so there can be one column more
        # than stems; a stem's id past the columns would fail every search with that word.
        columns = len(weights["indptr"]) - 1
        if stem_ids and max(stem_ids.values()) >= columns:
            raise KnowledgeError(
                f"{path} is inconsistent ({len(stem_ids)} stems for {columns} columns of "
                "weights); rebuild it with `supportbot kb ingest --replace PATH...`"
            )
        return cls(weights, QueryWords(stem_ids, stopwords, memo_limit=cls.MEMO_LIMIT), size)
