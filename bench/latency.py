"""Per-message latency of the engine, with a breakdown of where the time goes.

Builds (or reuses) a knowledge base from KB files, then sends every query of a queries file
through `Engine.handle` (database included, a SQLite file by default) and, separately, through
the decision path alone. Prints medians and percentiles for: query embedding, dense search,
BM25, fusion, policy, the whole decision, the database work (handle minus decision), and the
whole turn; plus the raw batch-embedding rate of the model on this machine.

    python bench/latency.py --kb KB.jsonl --queries QUERIES.jsonl [--limit 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from timing import pct, raw_rate, time_turns

from bot.engine import Engine, Responder
from bot.evaluate import load_queries
from bot.service import confidence_model, ingest
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.embeddings import Embedder
from knowledge.ingest import load_sources
from knowledge.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kb", type=Path, nargs="+", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--index", type=Path, help="Reuse or build the index here.")
    parser.add_argument("--database-url", help="Default: a SQLite file in a temporary folder.")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or Path(tmp) / "index"
        kb = KnowledgeBase(index_dir, Embedder())
        if not kb.exists:
            ingest(kb, load_sources(args.kb), progress=True)
        kb.load()
        responder = Responder(Retriever(kb), confidence_model(kb))
        store = Store.from_url(args.database_url or f"sqlite:///{tmp}/bench.db")
        engine = Engine(store, responder)
        queries = load_queries(args.queries)[: args.limit]
        texts = [q.text for q in queries]

        kb.embedder.warm_up()
        for text in texts[:20]:
            responder.respond(text)

        stages: dict[str, list[float]] = {}
        for text in texts:
            _, trace = responder.respond(text)
            for key, value in trace.timings.items():
                stages.setdefault(key, []).append(value)

        # A new conversation per message: the turn then makes the same decision as the
        # decision-only pass, so their difference is the turn's own overhead.
        turns, _ = time_turns(engine, texts)
        batch_rate = raw_rate(kb.embedder, texts[:512])

    decision = stages.get("total_ms", [])
    database = [t - d for t, d in zip(turns, decision, strict=False)]
    table = Table(
        title=f"{len(texts)} messages, {len(kb.entries)} entries, "
        f"{len(kb.unit_entry)} units ({kb.manifest.index_kind if kb.manifest else '?'})"
    )
    for column in ("stage", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    rows = [
        ("query embedding", stages.get("embed_ms", [])),
        ("dense search (FAISS)", stages.get("search_ms", [])),
        ("BM25", stages.get("lexical_ms", [])),
        ("fusion", stages.get("fusion_ms", [])),
        ("policy + reply", stages.get("policy_ms", [])),
        ("whole decision", decision),
        ("database + policies (turn - decision)", database),
        ("whole turn (Engine.handle)", turns),
    ]
    for name, values in rows:
        table.add_row(
            name,
            f"{statistics.median(values):.2f}" if values else "-",
            f"{pct(values, 95):.2f}",
            f"{pct(values, 99):.2f}",
        )
    console.print(table)
    per_message = 1000 / statistics.median(turns) if turns else 0.0
    console.print(
        f"messages/s at the median turn: {per_message:.1f}; "
        f"raw batch-embedding rate: {batch_rate:.1f} texts/s"
    )


if __name__ == "__main__":
    main()
