"""A memory-mapped dense index answers exactly as one read into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge.base import KnowledgeBase
from knowledge.embeddings import Embedder
from knowledge.index import DenseIndex
from knowledge.retriever import Retriever

DIM = 384


@pytest.mark.parametrize("threshold", [10_000, 0], ids=["flat", "hnsw"])
def test_mmap_and_read_indexes_give_the_same_hits(tmp_path: Path, threshold: int) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(600, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    built = DenseIndex.build(vectors, hnsw_threshold=threshold)
    built.save(tmp_path)
    queries = vectors[:50] + 0.1 * rng.normal(size=(50, DIM)).astype(np.float32)
    mapped = DenseIndex.load(tmp_path, mmap=True)
    read = DenseIndex.load(tmp_path, mmap=False)
    assert mapped.kind == read.kind == built.kind
    for index in (mapped, read):
        positions, scores = index.search(queries, 5)
        want_positions, want_scores = built.search(queries, 5)
        np.testing.assert_array_equal(positions, want_positions)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    assert (mapped.search(queries, 1)[0][:, 0] == np.arange(50)).mean() > 0.9


def test_a_mapped_index_survives_its_directory_being_replaced(tmp_path: Path) -> None:
    """An ingest swaps in a new directory and deletes the old one; readers keep working."""
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(100, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    directory = tmp_path / "index"
    directory.mkdir()
    DenseIndex.build(vectors).save(directory)
    mapped = DenseIndex.load(directory, mmap=True)
    (directory / DenseIndex.FILENAME).unlink()
    directory.rmdir()
    positions, _ = mapped.search(vectors[:3], 1)
    assert positions[:, 0].tolist() == [0, 1, 2]


@pytest.mark.model
def test_a_mapped_knowledge_base_retrieves_the_same_entries(
    sample_kb_dir: Path, embedder: Embedder
) -> None:
    questions = ["How much is the Plus plan?", "Can I export my data?", "reset password"]
    results = []
    for mmap in (True, False):
        kb = KnowledgeBase(sample_kb_dir, embedder, mmap=mmap).load()
        retriever = Retriever(kb)
        results.append(
            [
                [(c.entry.id, round(c.score, 5)) for c in retriever.retrieve(q).candidates]
                for q in questions
            ]
        )
    assert results[0] == results[1]
    assert all(results[0])
