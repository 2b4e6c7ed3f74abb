"""A conversation's second message on another worker, with and without the kept context vector.

Two workers on one database (a SQLite file, or PostgreSQL with ``--postgres-url``), each with
its own model and the same 10,000-entry knowledge base as `bench/throughput.py`. Each
conversation's first message (a BANKING77 test question) goes to worker A, which then embeds
the next message's context in a quiet moment (`Responder.anticipate`) and keeps it with the
conversation (`Store.keep_context`). Its second message (the next test question) goes to
worker B, as it does about three times in four with ``--workers 4``. B takes the kept vector
(`Responder.offer`) in one arm and ignores it in the other, in alternating blocks, so the
host's drift falls on both. Printed: B's whole turn, p50 and p95, for the second messages B
searched with their context (the ones the kept vector is for) and for the others.

Between the two messages worker A waits for its anticipation (`Embedder.settle`: a quiet
moment of 0.1 s, then the pass), so every second message follows an idle pause: on a sandboxed
VM such turns start cold (docs/benchmarks.md, "Tenth round"), in both arms alike.

    python bench/kept_context.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--conversations 800] [--block 25] [--postgres-url URL]
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table
from throughput import make_responder, paired_parser, paired_setup
from timing import bench_message, spread

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def worker(index: Path, work: Path, url: str, quantize: bool) -> Any:
    """One worker's engine: its own model and knowledge base, the shared database."""
    from bot.engine import Engine
    from bot.storage.store import Store

    kb, responder = make_responder(index, work, backend="onnx", quantize=quantize)
    kb.embedder.warm_up()
    # This process's own quiet decides, as in the engine's tests: the benchmark waits for each
    # anticipation (`settle`), which would otherwise wait on whatever else the machine runs.
    kb.embedder._ahead._meter = None
    return Engine(Store.from_url(url), responder)


def main() -> None:
    parser = paired_parser(__doc__, conversations=800)
    parser.add_argument("--postgres-url", help="default: a SQLite file in --work")
    args = parser.parse_args()
    index, texts = paired_setup(args)
    url = args.postgres_url or f"sqlite:///{args.work}/kept-{uuid.uuid4().hex[:6]}.db"
    a = worker(index, args.work, url, args.int8)
    b = worker(index, args.work, url, args.int8)
    offer = b.responder.offer
    offered: list[bool] = []

    def counted(*given: Any) -> bool:
        offered.append(offer(*given))
        return offered[-1]

    run = uuid.uuid4().hex[:8]
    times: dict[tuple[bool, bool], list[float]] = {}
    taken = 0
    for i in track(range(args.conversations), description="conversations"):
        kept = (i // args.block) % 2 == 1
        b.responder.offer = counted if kept else (lambda *given: False)
        offered.clear()
        for n, text in enumerate((texts[(i + 1) % len(texts)], texts[i % len(texts)])):
            message = bench_message(run, i, n, text)
            if n == 0:
                a.handle(message)
                a.responder.retriever.kb.embedder.settle()
                continue
            started = time.perf_counter()
            replies = b.handle(message)
            spent = (time.perf_counter() - started) * 1000
            stored = b.store.get_reply(replies[0].id) if replies and replies[0].id else None
            contextual = stored is not None and stored.query != text
            taken += contextual and any(offered)
            if i % args.block:  # the first of each block warms its arm up
                times.setdefault((kept, contextual), []).append(spent)
    table = Table(title=f"Second messages on worker B ({'int8' if args.int8 else 'fp32'})")
    for column in ("second messages", "kept vector", "n", "p50 ms", "p95 ms"):
        table.add_column(column)
    for contextual in (True, False):
        for kept in (False, True):
            table.add_row(
                "searched with their context" if contextual else "the others",
                "taken" if kept else "ignored",
                *spread(times.get((kept, contextual), [])),
            )
    Console().print(table)
    print(f"second messages searched with their context that were offered the kept vector: {taken}")
    for engine in (a, b):
        engine.responder.retriever.kb.embedder.close()
        engine.store.close()


if __name__ == "__main__":
    main()
