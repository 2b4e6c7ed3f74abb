"""Embedding texts ahead of their query while the process is idle (`Embedder.anticipate`).

After each reply the engine knows the context the conversation's next message would be searched
with if it turns out to be a follow-up (`Responder.anticipate`). The customer takes seconds to
write that message; a worker is idle most of that time. `Anticipator` embeds such texts in a
background thread, only once no live query has come for `idle_s`, and keeps each vector until a
query asks for it. Under load there is no quiet moment, so it spends nothing; waiting texts are
bounded, the oldest dropped first.

The thread is not a daemon: it ends with the `close` of its embedder, once the main thread has
finished (within `POLL_S`), so the interpreter never exits in the middle of a forward pass, or
after `LINGER_S` with nothing to do (a later text starts another), so an embedder nobody uses
any more is not kept alive by it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: How often an idle anticipating thread checks that the main thread still runs.
POLL_S = 0.25
#: An anticipating thread with nothing to do for this long ends.
LINGER_S = 30.0


class Anticipator:
    """Texts waiting to be embedded in a quiet moment, and the vectors embedded so far.

    Args:
        embed: the pass a live query of one text runs (so the vector is the one it would get).
        idle_s: embed only once no live query has come for this long (`touch`).
        queue: texts waiting at most; the oldest go first.
        keep: vectors kept for a query at most; the oldest go first.

    Keys are the callers' (`knowledge.cache.normalize` of the text, for `Embedder`).
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], Vectors],
        *,
        idle_s: float,
        queue: int,
        keep: int,
    ) -> None:
        self._embed = embed
        self.idle_s = idle_s
        self.queue = queue
        self.keep = keep
        self._cond = threading.Condition()
        self._waiting: OrderedDict[str, str] = OrderedDict()
        self._ready: OrderedDict[str, Vectors] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._running = False
        self._closing = False
        self._generation = 0
        self._last_live = 0.0

    def touch(self) -> None:
        """A live query came: the process is busy for at least `idle_s`."""
        self._last_live = time.monotonic()

    @property
    def ready(self) -> bool:
        """Whether any vector is waiting for its query (cheap: no lock)."""
        return bool(self._ready)

    def ask(self, key: str, text: str) -> None:
        """Embed `text` in the next quiet moment, unless it is waiting or ready already."""
        with self._cond:
            if self._closing or key in self._ready or key in self._waiting:
                return
            self._waiting[key] = text
            while len(self._waiting) > self.queue:
                self._waiting.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="embed-anticipate")
                self._thread.start()
            self._cond.notify_all()

    def take(self, key: str) -> Vectors | None:
        """The vector embedded for `key`, once (None: not embedded, or taken already)."""
        if not self._ready:
            return None
        with self._cond:
            return self._ready.pop(key, None)

    def has(self, key: str) -> bool:
        """Whether `key`'s vector is ready and not taken yet."""
        with self._cond:
            return key in self._ready

    def clear(self) -> None:
        """Forget every waiting text and ready vector (a pass running now is not kept)."""
        with self._cond:
            self._waiting.clear()
            self._ready.clear()
            self._generation += 1

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until no text is waiting or being embedded (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def close(self) -> None:
        """Stop the thread and forget everything; a later `ask` starts again."""
        with self._cond:
            thread, self._closing = self._thread, True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            self._thread, self._closing = None, False
            self._waiting.clear()
            self._ready.clear()
            self._generation += 1
            self._cond.notify_all()

    def _work(self) -> None:
        main = threading.main_thread()
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not self._waiting and not self._closing and main.is_alive():
                    if time.monotonic() - idle_since >= LINGER_S:
                        self._thread = None  # the next `ask` starts another
                        return
                    self._cond.wait(POLL_S)
                if self._closing or not main.is_alive():
                    return
            # A quiet moment: no live query for `idle_s` (each one pushes it further away).
            while not self._closing:
                delay = self._last_live + self.idle_s - time.monotonic()
                if delay <= 0:
                    break
                time.sleep(min(delay, POLL_S))
            with self._cond:
                if self._closing:
                    return
                if not self._waiting:
                    continue
                key, text = self._waiting.popitem(last=False)
                generation, self._running = self._generation, True
            vector: Vectors | None = None
            try:
                vector = self._embed([text])[0]
            except Exception:  # only a head start: the query embeds the text itself
                logger.debug("anticipating a query vector failed", exc_info=True)
            with self._cond:
                self._running = False
                if vector is not None and generation == self._generation:
                    self._ready[key] = vector
                    while len(self._ready) > self.keep:
                        self._ready.popitem(last=False)
                self._cond.notify_all()
