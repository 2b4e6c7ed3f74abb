"""Whole turns with the turn's forward pass started at once, and as before.

A turn hands its question to the prefetch thread (`Embedder.prefetch`) and stores the turn
meanwhile. The thread needs the GIL to start the pass, and with SQLite the turn's storage holds
it until its first blocking call; the turn now waits (at most `PREFETCH_START_S`) until an idle
thread's pass has started (`Store.in_process`; with PostgreSQL the first round trip lets the
GIL go, and the turn does not wait). This script sets that wait to 0 (as before) and back in
alternating blocks of conversations in one process, on a SQLite file, so the host's drift falls
on both arms, and prints the whole turns of first messages and of second messages sent at once
after the answer, p50 and p95.

    python bench/pass_start.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--conversations 800] [--block 25]
"""

from __future__ import annotations

import os
import time
import uuid

from rich.console import Console
from rich.progress import track
from rich.table import Table
from throughput import make_stack, paired_parser, paired_setup
from timing import bench_message, spread

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    args = paired_parser(__doc__, conversations=800).parse_args()

    import knowledge.embeddings as embeddings

    index, texts = paired_setup(args)
    kb, _, engine = make_stack(index, args.work, backend="onnx", quantize=args.int8)
    kb.embedder.warm_up()
    wait = embeddings.PREFETCH_START_S
    run = uuid.uuid4().hex[:8]
    times: dict[tuple[bool, int], list[float]] = {
        (on, n): [] for on in (False, True) for n in (0, 1)
    }
    for i in track(range(args.conversations), description="conversations"):
        on = (i // args.block) % 2 == 1
        embeddings.PREFETCH_START_S = wait if on else 0.0
        for n, text in enumerate((texts[i % len(texts)], texts[(i + 1) % len(texts)])):
            started = time.perf_counter()
            engine.handle(bench_message(run, i, n, text))
            if i % args.block:  # the first of each block warms its arm up
                times[on, n].append((time.perf_counter() - started) * 1000)
    model = "int8" if args.int8 else "fp32"
    table = Table(title=f"Whole turns on SQLite, the pass started first or not ({model})")
    for column in ("message", "pass started first", "n", "p50 ms", "p95 ms"):
        table.add_column(column)
    for n in (0, 1):
        for on in (False, True):
            table.add_row(("first", "second")[n], "yes" if on else "no", *spread(times[on, n]))
    Console().print(table)
    kb.embedder.close()
    engine.store.close()


if __name__ == "__main__":
    main()
