"""How much does the linear head over the examples add, and at which settings? (`knowledge/head.py`)

Chooses the head's regularisation (``C``) and its weight in the fusion (`head_weight`) on the
*held-out split of the training queries* that `supportbot train` holds out, searched against a
knowledge base without them, then reports test recall@1 for every setting against the full
knowledge base, as `supportbot eval` does. The test set takes no part in the choice; its column
only shows how well the choice carried over.

Every text is embedded once, each knowledge base indexed once and each query's dense and BM25
hits computed once (the machinery of `bench/retriever_sweep.py`); each ``C`` fits one head per
knowledge base (`EntryHead.fit`, as an ingest does), and each weight re-runs only the fusion.

    python bench/head_sweep.py [--data /tmp/b77s] [--kb KB.jsonl] [--test TEST.jsonl]
        [--model DIR] [--c 1 10 100] [--weights 0 0.5 1 2 4]

Figures and what they mean: docs/benchmarks.md, "Fourth session" of the issue-8 section.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from retriever_sweep import (
    add_data_options,
    console,
    data_paths,
    embedded_splits,
    held_and_test,
    score,
)
from rich.table import Table

from knowledge.base import UNIT_KINDS, KnowledgeBase
from knowledge.head import EntryHead, HeadConfig
from knowledge.retriever import RetrieverConfig


def fit_head(kb: KnowledgeBase, c: float) -> EntryHead | None:
    """The head an ingest of this knowledge base would fit with ``C`` = `c`."""
    vectors = np.load(kb.directory / "vectors.npy")
    questions = kb.unit_kind != UNIT_KINDS.index("passage")
    return EntryHead.fit(vectors, kb.unit_entry, questions, len(kb.entries), HeadConfig(c=c))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser, Path("/tmp/b77s"))
    parser.add_argument("--c", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    options = parser.parse_args()
    kb_path, test_path = data_paths(options)
    entries, kept, held_out, tests, embedder = embedded_splits(kb_path, test_path, options.model)
    base = RetrieverConfig()
    rows: list[tuple[float, float, float, float]] = []  # C, weight, held-out r@1, test r@1
    with tempfile.TemporaryDirectory(prefix="head-sweep-") as tmp:
        sets = held_and_test(Path(tmp), embedder, (entries, kept, held_out, tests), base.dense_k)
        for c in options.c:
            started = time.perf_counter()
            heads = [fit_head(s.kb, c) for s in sets]
            fitted = time.perf_counter() - started
            if any(h is None for h in heads):
                console.print("[yellow]this knowledge base gets no head (see HeadConfig)[/]")
                return
            for frozen, head in zip(sets, heads, strict=True):
                frozen.kb.head = head
            for weight in options.weights:
                config = replace(base, head_weight=weight)
                held, test = (score(s, config).recall_at_1 for s in sets)
                rows.append((c, weight, held, test))
            console.print(f"C {c:g}: two heads fitted in {fitted:.1f} s")

    table = Table(title=f"Linear head settings ({kb_path.name}); chosen on held-out")
    for column in ("C", "head_weight", "held-out r@1", "test r@1"):
        table.add_column(column, justify="right")
    best = max(rows, key=lambda r: (round(r[2], 6), -r[1]))  # ties: the smaller weight
    for c, weight, held, test in rows:
        mark = " ← chosen" if (c, weight) == best[:2] else ""
        table.add_row(f"{c:g}", f"{weight:g}", f"{held:.4f}", f"{test:.4f}{mark}")
    console.print(table)
    without = next((r for r in rows if r[1] == 0.0), None)
    if without is not None:
        console.print(
            f"without the head: held-out {without[2]:.4f}, test {without[3]:.4f}; chosen "
            f"(C {best[0]:g}, weight {best[1]:g}): held-out {best[2]:.4f}, test {best[3]:.4f}"
        )


if __name__ == "__main__":
    main()
