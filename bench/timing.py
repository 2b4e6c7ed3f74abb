"""Timing loops shared by the hot-path benchmarks (`bench/latency.py`, `bench/throughput.py`).

Each loop warms nothing up and prints nothing: callers warm up first and report. Times are in
milliseconds, rates in messages (or sentences) per second.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Texts per forward pass when the raw batch-embedding rate is measured (`raw_rate`).
RAW_BATCHES = (64, 16)


def pct(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile of `values` (0 for none)."""
    return float(np.percentile(values, q)) if len(values) else 0.0


def spread(values: Sequence[float]) -> list[str]:
    """A table row's last cells for some timings (ms): how many, p50 and p95 ("-" for none)."""
    if not len(values):
        return ["0", "-", "-"]
    return [str(len(values)), f"{statistics.median(values):.2f}", f"{pct(values, 95):.2f}"]


def time_each(call: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    """Milliseconds of `call(text)` for each text, one after another."""
    out = []
    for text in texts:
        started = time.perf_counter()
        call(text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def batched_rate(
    call: Callable[[Sequence[str]], object], texts: Sequence[str], batch: int
) -> float:
    """Messages per second when `call` gets the texts `batch` at a time."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        call(texts[start : start + batch])
    return len(texts) / (time.perf_counter() - started)


def time_turns(
    engine: Any,
    texts: Sequence[str],
    *,
    second: bool = False,
    pause_s: float = 0.0,
    fresh: Callable[[], object] | None = None,
) -> tuple[list[float], float]:
    """Milliseconds of each live turn (`Engine.handle`) and the turns per second of the loop.

    Every message opens its own conversation, so each turn makes the same decision as the
    decision path alone; the difference is the turn's own work (database, policies).

    `second`: each timed message is instead the second of its conversation, after another
    test question (the next one, answered first and not timed): the turn then reads a history,
    and a message the knowledge base does not answer confidently on its own is searched again
    with the conversation's context (`Responder._decide`), which embeds that context too. The
    loop's rate then counts only the timed turns' time.

    `pause_s`: wait this long before each timed message, as a customer takes time to write
    (and reads the answer first): the process is idle in between, as a quiet worker is. With
    `second` the engine embeds the second message's context in that pause
    (`Responder.anticipate`: it waits for 0.1 s of quiet first). On a sandboxed, nested VM every
    timed turn also starts cold, whatever the code (docs/benchmarks.md, "Tenth round"). The rate
    counts only the timed turns' time.

    `fresh`: called before each conversation, untimed (say, to empty the query cache, so a
    conversation finds only what its own turns left there).
    """
    run = uuid.uuid4().hex[:8]
    out = []
    spent = 0.0
    begin = time.perf_counter()
    for i, text in enumerate(texts):
        if fresh is not None:
            fresh()
        asked = [texts[(i + 1) % len(texts)], text] if second else [text]
        for n, question in enumerate(asked):
            if pause_s and n == len(asked) - 1:
                time.sleep(pause_s)
            started = time.perf_counter()
            engine.handle(bench_message(run, i, n, question))
            if n == len(asked) - 1:
                out.append((time.perf_counter() - started) * 1000)
                spent += out[-1] / 1000
    elapsed = spent if second or pause_s else time.perf_counter() - begin
    return out, len(texts) / elapsed


def bench_message(run: str, conversation: int, n: int, text: str) -> Any:
    """The `n`-th message of a benchmark's `conversation` (a channel of its own in `run`), from
    one of 50 customers."""
    from bot.model import InboundMessage

    return InboundMessage(
        platform="bench",
        workspace="",
        channel=f"{run}-{conversation}",
        user=f"u{conversation % 50}",
        message_id=f"{run}-{conversation}-{n}",
        text=text,
    )


def raw_rate(embedder: Any, texts: Sequence[str], total: int = 2048) -> float:
    """The model's raw batch-embedding rate, sentences per second: the best of `raw_rates`."""
    return max(raw_rates(embedder, texts, total).values())


def raw_rates(embedder: Any, texts: Sequence[str], total: int = 2048) -> dict[str, float]:
    """The model's raw batch-embedding rates, sentences per second, each way it can run.

    `total` sentences (the texts repeated), after one warm-up batch:
    * ``"64"``, ``"16"``: through `Embedder.encode` in passes of that many (sorted by length,
      as ingestion does); passes of 64 were the only raw rate measured before lanes;
    * ``"lanes"``: through `Embedder.map_queries` with nothing to do per pass: the live-query
      path's passes of 16 in the embedder's lanes, without the search. With one lane it is
      ``"16"`` again, so it is left out.
    """
    batch = (list(texts) * max(1, total // max(len(texts), 1) + 1))[:total]
    previous = embedder.batch_size
    rates = {}
    try:
        for size in RAW_BATCHES:
            embedder.batch_size = size
            embedder.encode(batch[:size])
            started = time.perf_counter()
            embedder.encode(batch)
            rates[str(size)] = len(batch) / (time.perf_counter() - started)
    finally:
        embedder.batch_size = previous
    if embedder.backend == "onnx" and embedder.lanes > 1 and embedder.cache is None:
        started = time.perf_counter()
        embedder.map_queries(batch, lambda positions, vectors, seconds: None)
        rates["lanes"] = len(batch) / (time.perf_counter() - started)
    return rates
