"""Exact (flat) versus HNSW FAISS search: where does HNSW start to pay?

Prints build time, median and p95 search time of one query (k=100), and HNSW's recall@10 and
top-1 agreement against exact search, for several index sizes: of random unit vectors of the
model's dimension, or with ``--real`` of a built knowledge base's own vectors (the first N),
searched with the model's embeddings of real questions. Random vectors have no clusters, the
worst case for HNSW; the real ones decide `knowledge.index.HNSW_THRESHOLD`.

    python bench/index_size.py [--sizes 10000 50000 100000 200000]
    python bench/index_size.py --real INDEX_DIR --questions test.jsonl --sizes 5000 10000 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from knowledge.index import DenseIndex


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def time_searches(index: DenseIndex, queries: np.ndarray, k: int) -> list[float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - started) * 1000)
    return times


def real_vectors(
    directory: Path, questions: Path | None, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """A knowledge base's stored vectors, and up to `limit` questions embedded by the model."""
    from bot.evaluate import load_queries
    from knowledge.embeddings import Embedder

    if questions is None:
        raise SystemExit("--real needs --questions FILE (a JSONL queries file)")
    vectors = np.load(directory / "vectors.npy").astype(np.float32)
    texts = [q.text for q in load_queries(questions)][:limit]
    embedder = Embedder(backend="auto", onnx_dir=directory.parent / "onnx")
    return vectors, embedder.encode(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--real", type=Path, help="a knowledge base's index directory")
    parser.add_argument("--questions", type=Path, help="with --real: a queries file (JSONL)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    real, asked = None, None
    if args.real is not None:
        real, asked = real_vectors(args.real, args.questions, args.queries)
    title = "real vectors" if real is not None else "random vectors"
    table = Table(title=f"FAISS search, one query, k=100, {title}")
    columns = ("vectors", "index", "build s", "p50 ms", "p95 ms", "recall@10", "same top hit")
    for column in columns:
        table.add_column(column, justify="right")
    for n in args.sizes:
        if real is not None and asked is not None:
            base, queries = real[:n], asked
        else:
            base = unit_vectors(n, args.dim, rng)
            # Queries near stored vectors, as real questions are near their examples.
            picks = rng.integers(0, n, args.queries)
            noise = 0.5 * unit_vectors(args.queries, args.dim, rng) / np.sqrt(args.dim)
            queries = base[picks] + noise
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        results = {}
        top_scores = {}
        for kind, threshold in (("flat", n + 1), ("hnsw", 0)):
            started = time.perf_counter()
            index = DenseIndex.build(base, hnsw_threshold=threshold)
            build = time.perf_counter() - started
            times = time_searches(index, queries, 100)
            results[kind], scores = index.search(queries, 10)
            top_scores[kind] = scores[:, 0]
            pairs = zip(results["flat"], results[kind], strict=True)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in pairs])
            # The same best score (a tie among equal vectors counts as the same hit).
            same_top = np.mean(np.isclose(top_scores["flat"], top_scores[kind], atol=1e-6))
            table.add_row(
                f"{n:,}",
                kind,
                f"{build:.2f}",
                f"{statistics.median(times):.3f}",
                f"{np.percentile(times, 95):.3f}",
                f"{recall:.3f}",
                f"{same_top:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
