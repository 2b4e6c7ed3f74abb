"""Second messages with their context searched while their own vector is computed, and as before.

A second message has a context (the last question and the topic of the answer), and it is
searched with it when it looks like a follow-up or is unclear alone (`Responder._decide`).
While the message's own vector is still being computed in the background, the turn now
searches that context (`Responder._context_ahead`, `Retriever.search_context`), and the
follow-up search takes it instead of searching it after the wait. This script switches that
off (as before) and on in alternating blocks of conversations in one process, on a SQLite file
with a query cache (the service's default, so the context's question vector is at hand), and
prints the whole turns of second messages sent at once after the answer: all of them, those
searched with their context, and the others.

    python bench/context_ahead.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--conversations 1600] [--block 10]
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table
from throughput import make_stack, paired_parser, paired_setup
from timing import bench_message, spread

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = paired_parser(__doc__, conversations=1600)
    parser.set_defaults(block=10)
    args = parser.parse_args()

    index, texts = paired_setup(args)
    kb, responder, engine = make_stack(
        index, args.work, backend="onnx", quantize=args.int8, cache_size=1024
    )
    kb.embedder.warm_up()
    searched_with_context: list[bool] = []
    follow_up_search = responder.retriever.retrieve_follow_up

    def recorded(*positional: Any, **named: Any) -> Any:
        searched_with_context.append(True)
        return follow_up_search(*positional, **named)

    responder.retriever.retrieve_follow_up = recorded  # type: ignore[method-assign]
    ahead = responder._context_ahead
    run = uuid.uuid4().hex[:8]
    times: dict[tuple[bool, str], list[float]] = {
        (on, group): [] for on in (False, True) for group in ("all", "with context", "alone")
    }
    for i in track(range(args.conversations), description="conversations"):
        on = (i // args.block) % 2 == 1
        responder._context_ahead = ahead if on else (lambda history, found: None)  # type: ignore[method-assign]
        # Two questions no earlier conversation asked: neither vector is cached.
        first, second = texts[(2 * i) % len(texts)], texts[(2 * i + 1) % len(texts)]
        engine.handle(bench_message(run, i, 0, first))
        searched_with_context.clear()
        started = time.perf_counter()
        engine.handle(bench_message(run, i, 1, second))
        elapsed = (time.perf_counter() - started) * 1000
        if i % args.block:  # the first of each block warms its arm up
            times[on, "all"].append(elapsed)
            times[on, "with context" if searched_with_context else "alone"].append(elapsed)
    model = "int8" if args.int8 else "fp32"
    table = Table(title=f"Second messages on SQLite, the context searched ahead or not ({model})")
    for column in ("second messages", "context searched ahead", "n", "p50 ms", "p95 ms"):
        table.add_column(column)
    for group in ("all", "with context", "alone"):
        for on in (False, True):
            table.add_row(group, "yes" if on else "no", *spread(times[on, group]))
    Console().print(table)
    kb.embedder.close()


if __name__ == "__main__":
    main()
