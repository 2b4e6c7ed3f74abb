"""Micro-batching: concurrent single queries share one forward pass.

Several requests served at once (web workers' thread pools, the Discord client) each embed one
short text. One forward pass over eight texts costs far less than eight passes over one, so
`MicroBatcher` funnels every caller's texts to one worker thread, which waits up to `window_s`
after the first text for more (at most `max_batch`), runs them as one batch and hands each caller
its own rows. With `window_s = 0` it never waits: whatever queued up while the previous pass ran
goes in the next one, so a lone caller pays nothing.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher:
    """Groups texts from concurrent callers into one call of `encode`.

    A `Batcher` whose items are the callers' tuples of texts, weighed by their length: one
    forward pass embeds every text of the batch, and each caller gets its own rows back.

    Args:
        encode: embeds a list of texts in one forward pass; returns one row per text.
        window_s: how long the worker waits after the first text for others.
        max_batch: the most texts per forward pass.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str]], Vectors],
        *,
        window_s: float = 0.002,
        max_batch: int = 32,
    ) -> None:
        self._encode = encode
        self._batcher: Batcher[tuple[str, ...], Vectors] = Batcher(
            self._encode_requests,
            window_s=window_s,
            max_batch=max_batch,
            weight=len,
            name="embed-batcher",
        )
        self.window_s = window_s
        self.max_batch = max_batch

    @property
    def batches(self) -> int:
        """How many forward passes ran (for benchmarks)."""
        return self._batcher.batches

    @property
    def texts(self) -> int:
        """How many texts those passes carried (for benchmarks)."""
        return self._batcher.items

    def submit(self, texts: Sequence[str]) -> Future[Vectors]:
        """Queue texts; the future resolves to their vectors (or the encoder's exception)."""
        if self._batcher.closed:
            raise RuntimeError("the micro-batcher is closed")
        if not texts:
            future: Future[Vectors] = Future()
            future.set_result(np.zeros((0, 0), dtype=np.float32))
            return future
        return self._batcher.submit(tuple(texts))

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Embed texts, sharing the forward pass with whoever else asks at the same time."""
        return self.submit(texts).result()

    async def aencode(self, texts: Sequence[str]) -> Vectors:
        """`encode` for coroutines: waits without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(texts))

    def close(self) -> None:
        """Stop the worker after the queued requests are done."""
        self._batcher.close()

    def _encode_requests(self, requests: list[tuple[str, ...]]) -> list[Vectors]:
        vectors = self._encode([text for texts in requests for text in texts])
        rows: list[Vectors] = []
        start = 0
        for texts in requests:
            rows.append(np.array(vectors[start : start + len(texts)], dtype=np.float32))
            start += len(texts)
        return rows


@dataclass(frozen=True, slots=True)
class _Item(Generic[T, R]):
    item: T
    future: Future[R]


class Batcher(Generic[T, R]):
    """Groups single calls from concurrent threads into one call of `run` over a list.

    `MicroBatcher` runs on it for embeddings; `bot.engine.Responder` hands it ``respond_many``,
    so concurrent turns share one embedding pass, one FAISS search and one BM25 pass instead of
    sharing the embedding only.

    Args:
        run: handles a list of items; returns one result per item, in order.
        window_s: how long the worker waits after the first item for others (0: it takes only
            what queued up while the previous call ran, so a lone caller never waits).
        max_batch: the most items per call, counted by `weight`.
        weight: how much one item counts towards `max_batch` (1 each by default).
        name: the worker thread's name.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        window_s: float = 0.002,
        max_batch: int = 64,
        weight: Callable[[T], int] = lambda item: 1,
        name: str = "decision-batcher",
    ) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError("window_s must be ≥ 0 and max_batch ≥ 1")
        self._run_batch = run
        self.window_s = window_s
        self.max_batch = max_batch
        self._weight = weight
        self._name = name
        self._queue: queue.SimpleQueue[_Item[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.closed = False
        #: How many calls of `run` there were and how many items (by weight) they carried.
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> Future[R]:
        """Queue one item; the future resolves to its result (or `run`'s exception)."""
        if self.closed:
            raise RuntimeError("the batcher is closed")
        future: Future[R] = Future()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                    self._thread.start()
        self._queue.put(_Item(item, future))
        return future

    def call(self, item: T) -> R:
        """`run` for one item, shared with whoever else calls at the same time."""
        return self.submit(item).result()

    def close(self) -> None:
        """Stop the worker after the queued items are done."""
        self.closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            total = self._weight(first.item)
            stop = False
            deadline = time.perf_counter() + self.window_s
            while total < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                total += self._weight(item.item)
            try:
                results = self._run_batch([b.item for b in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(batch)} items gave {len(results)} results")
            except BaseException as e:  # every caller must learn of the failure
                for b in batch:
                    b.future.set_exception(e)
            else:
                self.batches += 1
                self.items += total
                for b, result in zip(batch, results, strict=True):
                    b.future.set_result(result)
            if stop:
                return
