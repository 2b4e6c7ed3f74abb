"""Exact (flat) versus HNSW FAISS search: where does HNSW start to pay?

Prints build time, median and p95 search time of one query (k=100) and HNSW's recall@10
against exact search, for several index sizes of random unit vectors of the model's dimension.

    python bench/index_size.py [--sizes 10000 50000 100000 200000]
"""

from __future__ import annotations

import argparse
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    table = Table(title="FAISS search, one query, k=100")
    for column in ("vectors", "index", "build s", "p50 ms", "p95 ms", "recall@10 vs exact"):
        table.add_column(column, justify="right")
    for n in args.sizes:
        base = unit_vectors(n, args.dim, rng)
        # Queries near stored vectors, as real questions are near their examples.
        picks = rng.integers(0, n, args.queries)
        queries = base[picks] + 0.5 * unit_vectors(args.queries, args.dim, rng) / np.sqrt(args.dim)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        results = {}
        for kind, threshold in (("flat", n + 1), ("hnsw", 0)):
            started = time.perf_counter()
            index = DenseIndex.build(base, hnsw_threshold=threshold)
            build = time.perf_counter() - started
            times = time_searches(index, queries, 100)
            results[kind] = index.search(queries, 10)[0]
            pairs = zip(results["flat"], results[kind], strict=True)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in pairs])
            table.add_row(
                f"{n:,}",
                kind,
                f"{build:.2f}",
                f"{statistics.median(times):.3f}",
                f"{np.percentile(times, 95):.3f}",
                f"{recall:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
