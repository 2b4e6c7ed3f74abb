"""How much do the retriever's fusion settings matter? A grid over `RetrieverConfig`.

The fusion (`knowledge/retriever.py`: soft kNN vote with `vote_k` and `tau`, plus
`lexical_weight` BM25 and `dense_weight` cosine) was set by hand for the untuned model. This
script chooses settings on a *held-out split of the training queries*, the very split
`supportbot train` holds out (`training.finetune.split_kb`, same seed and shares), searched
against a knowledge base without those queries; then it reports test recall@1 for the chosen
settings and for the defaults, against the full knowledge base, as `supportbot eval` does. The
test set never takes part in the choice.

Everything expensive happens once per model: every text is embedded once (vectors kept in
memory), each knowledge base is indexed once, and the dense and BM25 hits of every query are
computed once at the largest depth; each setting then re-runs only the fusion
(`Retriever.search_many` over the stored hits).

    python bench/retriever_sweep.py [--data /tmp/b8/data] [--kb KB.jsonl] [--test TEST.jsonl]
        [--model DIR] [--quick] [--oracle] [--json OUT.json]

Figures and what they mean: docs/benchmarks.md, "Third session" of the issue-8 section.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from bot.evaluate import load_queries
from knowledge.base import KnowledgeBase, units_of
from knowledge.embeddings import Embedder
from knowledge.index import lexical_top
from knowledge.ingest import load_sources
from knowledge.retriever import Retriever, RetrieverConfig
from knowledge.types import Entry
from training.finetune import TrainConfig, split_kb

console = Console()
Vectors = npt.NDArray[np.float32]

#: The grid the brief asks for; `--quick` keeps the values either side of each default.
GRID: dict[str, tuple[float, ...]] = {
    "vote_k": (1, 3, 5, 10, 20),
    "tau": (5.0, 10.0, 20.0, 40.0),
    "lexical_weight": (0.0, 0.05, 0.1, 0.2),
    "dense_weight": (0.0, 0.1, 0.3),
}
QUICK_GRID: dict[str, tuple[float, ...]] = {
    "vote_k": (3, 5, 10),
    "tau": (5.0, 10.0, 20.0),
    "lexical_weight": (0.05, 0.1, 0.2),
    "dense_weight": (0.0, 0.1, 0.3),
}
#: Entries ranked per query (MRR counts ranks up to here), as `training.evaluate` does.
DEPTH = 10


class MemoEmbedder(Embedder):
    """An embedder that embeds each text once per process: both knowledge bases (with and
    without the held-out queries) and all query sets share the vectors."""

    def __init__(self, model: Path | None) -> None:
        super().__init__(model, cache_size=0)
        self.memo: dict[str, npt.NDArray[np.float32]] = {}

    def prime(self, texts: Sequence[str]) -> None:
        """Embed every text not seen yet, with a progress bar."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if len(missing) <= 64:
            if missing:
                self.memo.update(zip(missing, super().encode(missing), strict=True))
            return
        with progress_bar() as bar:
            task = bar.add_task("Embedding (once per model)", total=len(missing))
            for start in range(0, len(missing), 512):
                chunk = missing[start : start + 512]
                self.memo.update(zip(chunk, super().encode(chunk), strict=True))
                bar.advance(task, len(chunk))

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        self.prime([t for t in texts if t not in self.memo])
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.memo[t] for t in texts])

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self.encode(texts)


class ReplayDense:
    """Stands in for the FAISS index: the hits of one query batch, searched once at `depth`."""

    def __init__(self, real: Any, vectors: Vectors, depth: int) -> None:
        self.real = real
        self.vectors = vectors
        self.positions, self.scores = real.search(vectors, depth)
        self.depth = depth

    def search(self, queries: Vectors, k: int) -> tuple[Any, Any]:
        if queries is self.vectors and k <= self.depth:
            return self.positions[:, :k], self.scores[:, :k]
        return self.real.search(queries, k)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class ReplayLexical:
    """Stands in for the BM25 index: one query batch's scores, computed once."""

    def __init__(self, real: Any, queries: Sequence[str]) -> None:
        self.real = real
        self.queries = list(queries)
        self.rows = real.scores_many(self.queries)

    def scores_many(self, queries: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        if list(queries) == self.queries:
            return [row.copy() for row in self.rows]
        return self.real.scores_many(queries)  # type: ignore[no-any-return]

    def top_many(self, queries: Sequence[str], k: int) -> list[tuple[Any, Any]]:
        if list(queries) == self.queries:
            return [(top, row[top]) for row in self.rows for top in [lexical_top(row, k)]]
        return self.real.top_many(queries, k)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass(frozen=True, slots=True)
class QuerySet:
    """Labelled queries against one knowledge base, with their hits computed once."""

    name: str
    kb: KnowledgeBase
    texts: list[str]
    expected: list[str]
    vectors: Vectors


@dataclass(frozen=True, slots=True)
class Score:
    recall_at_1: float
    mrr: float
    right: tuple[bool, ...]  # per query: the expected entry ranked first

    def key(self) -> tuple[float, float]:
        """What decides between settings: recall@1, then MRR (as promotion does)."""
        return (round(self.recall_at_1, 6), round(self.mrr, 6))


def build_kb(folder: Path, embedder: MemoEmbedder, entries: Sequence[Entry]) -> KnowledgeBase:
    kb = KnowledgeBase(folder, embedder)
    kb.ingest(entries, replace_all=True)
    return kb


def query_set(
    name: str, kb: KnowledgeBase, texts: list[str], expected: list[str], depth: int
) -> QuerySet:
    """Freeze the knowledge base's hits for these queries (see `ReplayDense`)."""
    vectors = kb.embedder.encode(texts)
    kb.dense = ReplayDense(kb.dense, vectors, depth)  # type: ignore[assignment]
    kb.lexical = ReplayLexical(kb.lexical, texts)  # type: ignore[assignment]
    return QuerySet(name, kb, texts, expected, vectors)


def embedded_splits(
    kb_path: Path, test_path: Path, model: Path | None
) -> tuple[list[Entry], list[Entry], list[Any], list[Any], MemoEmbedder]:
    """The knowledge base, its entries without the held-out questions, the held-out questions
    (`training.finetune.split_kb`, as `supportbot train` splits), the in-scope test queries,
    and an embedder that has embedded every text of them once."""
    train = TrainConfig()
    entries = load_sources([kb_path])
    kept, held_out = split_kb(entries, train.holdout, train.seed, train.max_holdout)
    tests = [q for q in load_queries(test_path) if q.expected is not None]
    embedder = MemoEmbedder(model)
    console.print(
        f"model {embedder.model_path}; {len(entries)} entries, {len(held_out)} held-out training "
        f"queries (seed {train.seed}), {len(tests)} in-scope test queries"
    )
    embedder.prime(
        [t for e in entries for _, t in units_of(e)]
        + [q.text for q in held_out]
        + [q.text for q in tests]
    )
    return entries, kept, held_out, tests, embedder


def held_and_test(
    folder: Path,
    embedder: MemoEmbedder,
    splits: tuple[list[Entry], list[Entry], list[Any], list[Any]],
    depth: int,
) -> tuple[QuerySet, QuerySet]:
    """The held-out questions against a knowledge base without them, and the test queries
    against the full one, each with its hits frozen (`query_set`)."""
    entries, kept, held_out, tests = splits
    held = query_set(
        "held-out",
        build_kb(folder / "held", embedder, kept),
        [q.text for q in held_out],
        [q.entry_id for q in held_out],
        depth,
    )
    test = query_set(
        "test",
        build_kb(folder / "full", embedder, entries),
        [q.text for q in tests],
        [str(q.expected) for q in tests],
        depth,
    )
    return held, test


def score(queries: QuerySet, config: RetrieverConfig) -> Score:
    results = Retriever(queries.kb, config).search_many(queries.vectors, queries.texts, top=DEPTH)
    ranks: list[int | None] = []
    for result, wanted in zip(results, queries.expected, strict=True):
        ids = [c.entry.id for c in result.candidates]
        ranks.append(ids.index(wanted) + 1 if wanted in ids else None)
    right = tuple(r == 1 for r in ranks)
    return Score(
        recall_at_1=sum(right) / len(right),
        mrr=statistics.fmean(1 / r if r else 0.0 for r in ranks),
        right=right,
    )


def configs(grid: dict[str, tuple[float, ...]]) -> Iterator[RetrieverConfig]:
    default = RetrieverConfig()
    yield default
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        settings = dict(zip(names, values, strict=True))
        settings["vote_k"] = int(settings["vote_k"])
        config = RetrieverConfig(**settings)  # type: ignore[arg-type]
        if config != default:
            yield config


def progress_bar() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def add_data_options(parser: argparse.ArgumentParser, data: Path) -> None:
    """The options naming what a sweep reads: DATA (the `import-intents` folder), the files in it
    to use instead of its kb.jsonl and test.jsonl, and the model."""
    parser.add_argument("--data", type=Path, default=data)
    parser.add_argument("--kb", type=Path, help="default: DATA/kb.jsonl")
    parser.add_argument("--test", type=Path, help="default: DATA/test.jsonl")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled one)")


def data_paths(options: argparse.Namespace) -> tuple[Path, Path]:
    """The knowledge base and test queries that `add_data_options` named."""
    return options.kb or options.data / "kb.jsonl", options.test or options.data / "test.jsonl"


def label(config: RetrieverConfig) -> str:
    return (
        f"k={config.vote_k} τ={config.tau:g} lex={config.lexical_weight:g} "
        f"dense={config.dense_weight:g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser, Path("/tmp/b8/data"))
    parser.add_argument("--quick", action="store_true", help="a smaller grid around the defaults")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score every setting on test: how much the best possible choice could gain "
        "(a diagnostic only; the choice stays the held-out one)",
    )
    options = parser.parse_args()
    kb_path, test_path = data_paths(options)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    console.print(f"[dim]{load}[/]")

    started = time.perf_counter()
    entries, kept, held_out, tests, embedder = embedded_splits(kb_path, test_path, options.model)
    embedded = time.perf_counter()
    depth = RetrieverConfig().dense_k
    with tempfile.TemporaryDirectory(prefix="retriever-sweep-") as tmp:
        held, test = held_and_test(Path(tmp), embedder, (entries, kept, held_out, tests), depth)
        indexed = time.perf_counter()
        grid = list(configs(QUICK_GRID if options.quick else GRID))
        results: list[tuple[RetrieverConfig, Score]] = []
        with progress_bar() as bar:
            task = bar.add_task("Fusion settings (held-out)", total=len(grid))
            for config in grid:
                results.append((config, score(held, config)))
                bar.advance(task)
        default_config, default_held = results[0]
        # The best on held-out; among equals, the defaults (then the grid's order).
        best_key = max(s.key() for _, s in results)
        chosen, chosen_held = next((c, s) for c, s in results if s.key() == best_key)
        default_test = score(test, default_config)
        chosen_test = score(test, chosen)
        oracle: list[tuple[RetrieverConfig, Score]] = []
        if options.oracle:
            with progress_bar() as bar:
                task = bar.add_task("Fusion settings (test, oracle)", total=len(grid))
                for config in grid:
                    oracle.append((config, score(test, config)))
                    bar.advance(task)
        swept = time.perf_counter()

    table = Table(title=f"Fusion settings, best 12 of {len(grid)} on held-out ({kb_path.name})")
    for column in ("settings", "held-out r@1", "held-out MRR"):
        table.add_column(column, justify="right" if column != "settings" else "left")
    ranked = sorted(results, key=lambda r: r[1].key(), reverse=True)
    for config, result in ranked[:12]:
        mark = " (default)" if config == default_config else ""
        table.add_row(label(config) + mark, f"{result.recall_at_1:.4f}", f"{result.mrr:.4f}")
    console.print(table)

    marginal = Table(title="Best held-out recall@1 with one setting fixed")
    marginal.add_column("setting")
    marginal.add_column("value → best r@1")
    for name, values in (QUICK_GRID if options.quick else GRID).items():
        cells = []
        for value in values:
            best = max(
                (s.recall_at_1 for c, s in results if getattr(c, name) == value), default=0.0
            )
            cells.append(f"{value:g}: {best:.4f}")
        marginal.add_row(name, "  ".join(cells))
    console.print(marginal)

    wins = sum(c and not d for c, d in zip(chosen_test.right, default_test.right, strict=True))
    losses = sum(d and not c for c, d in zip(chosen_test.right, default_test.right, strict=True))
    summary = Table(title="Chosen on held-out, measured on test")
    for column in ("settings", "held-out r@1 / MRR", "test r@1 / MRR"):
        summary.add_column(column)
    for name, config, h, t in (
        ("default", default_config, default_held, default_test),
        ("chosen", chosen, chosen_held, chosen_test),
    ):
        summary.add_row(
            f"{name}: {label(config)}",
            f"{h.recall_at_1:.4f} / {h.mrr:.4f}",
            f"{t.recall_at_1:.4f} / {t.mrr:.4f}",
        )
    console.print(summary)
    console.print(
        f"test: chosen gets {wins} queries right that the default misses and misses {losses} "
        f"it gets right (of {len(tests)}); "
        f"embedding {embedded - started:.0f}s, indexing {indexed - embedded:.0f}s, "
        f"sweep {swept - indexed:.0f}s"
    )
    if oracle:
        best_config, best_test = max(oracle, key=lambda r: r[1].key())
        spread = [s.recall_at_1 for _, s in oracle]
        console.print(
            f"oracle (test used to choose, not a result): best {label(best_config)} "
            f"test r@1 {best_test.recall_at_1:.4f}; over the grid {min(spread):.4f} to "
            f"{max(spread):.4f}, median {statistics.median(spread):.4f}"
        )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    console.print(f"[dim]{load}[/]")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "model": str(embedder.model_path),
                    "kb": str(kb_path),
                    "test": str(test_path),
                    "default": {
                        "config": asdict(default_config),
                        "held_out": [default_held.recall_at_1, default_held.mrr],
                        "test": [default_test.recall_at_1, default_test.mrr],
                    },
                    "chosen": {
                        "config": asdict(chosen),
                        "held_out": [chosen_held.recall_at_1, chosen_held.mrr],
                        "test": [chosen_test.recall_at_1, chosen_test.mrr],
                    },
                    "test_wins_losses": [wins, losses],
                    "grid": [
                        {**asdict(c), "recall_at_1": s.recall_at_1, "mrr": s.mrr}
                        for c, s in results
                    ],
                    "oracle_test": [
                        {**asdict(c), "recall_at_1": s.recall_at_1, "mrr": s.mrr} for c, s in oracle
                    ],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
