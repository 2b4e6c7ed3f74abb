"""Follow-ups sent right after the answer, with and without their context prefetched.

A message that looks like a follow-up ("and for a business account?") is always searched with
its conversation's context (`Responder._decide`), which costs that context a forward pass of
its own. When the customer pauses first, the engine embeds it in the pause
(`Responder.anticipate`); when the message comes at once, the turn starts the context's pass on
the prefetch thread as soon as it has read the history, so it runs while the message itself is
searched (`Responder.prefetch_context`).

Each conversation: a BANKING77 test question, then at once one of a few generic follow-ups, on
the 10,000-entry knowledge base of `bench/throughput.py` and a SQLite file. The prefetch is on
and off in alternating blocks in one process, so the host's drift falls on both; printed: the
follow-ups' whole turns, p50 and p95.

    python bench/follow_ups.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--conversations 600] [--block 25]
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

FOLLOW_UPS = (
    "and for a business account?",
    "what about in euros?",
    "and how long does that take?",
    "is there a fee for that?",
    "what if I'm abroad?",
    "and on the app?",
)


def main() -> None:
    args = paired_parser(__doc__, conversations=600).parse_args()

    from bot.context import looks_like_follow_up

    assert all(looks_like_follow_up(text) for text in FOLLOW_UPS)
    index, texts = paired_setup(args)
    kb, responder, engine = make_stack(index, args.work, backend="onnx", quantize=args.int8)
    kb.embedder.warm_up()
    prefetch = responder.prefetch_context
    run = uuid.uuid4().hex[:8]
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in track(range(args.conversations), description="conversations"):
        on = (i // args.block) % 2 == 1
        responder.prefetch_context = prefetch if on else (lambda *given: None)
        engine.handle(bench_message(run, i, 0, texts[i % len(texts)]))
        started = time.perf_counter()
        engine.handle(bench_message(run, i, 1, FOLLOW_UPS[i % len(FOLLOW_UPS)]))
        if i % args.block:  # the first of each block warms its arm up
            times[on].append((time.perf_counter() - started) * 1000)
    table = Table(title=f"Follow-ups right after the answer ({'int8' if args.int8 else 'fp32'})")
    for column in ("context prefetched", "n", "p50 ms", "p95 ms"):
        table.add_column(column)
    for on in (False, True):
        table.add_row("yes" if on else "no", *spread(times[on]))
    Console().print(table)
    kb.embedder.close()
    engine.store.close()


if __name__ == "__main__":
    main()
