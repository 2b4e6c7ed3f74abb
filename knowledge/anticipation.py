"""Embedding texts ahead of their query while the process is idle (`Embedder.anticipate`).

After each reply the engine knows the context the conversation's next message would be searched
with if it turns out to be a follow-up (`Responder.anticipate`). The customer takes seconds to
write that message; a worker is idle most of that time. `Anticipator` embeds such texts in a
background thread in quiet moments only, and keeps each vector until a query asks for it. A
quiet moment is `idle_s` without a live query in this process *and* with most of the CPUs this
process may use idle (`CpuMeter`): one worker idle beside busy ones, or beside other programs,
does not take their cores. Under load there is no quiet moment, so it spends nothing; waiting
texts are bounded, the oldest dropped first.

Whoever asks may also pass `done`, called with the vector once it is embedded (the engine keeps
it with the conversation, so that whichever worker answers the next message finds it: `offer`).

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
from pathlib import Path

import numpy as np
import numpy.typing as npt

from knowledge.cpus import CGROUP, allowed_cpus, cgroup_quota

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float32]
#: Called with a text's vector once it is embedded (`Anticipator.ask`).
Done = Callable[[Vector], None]

#: How often an idle anticipating thread checks that the main thread still runs.
POLL_S = 0.25
#: An anticipating thread with nothing to do for this long ends.
LINGER_S = 30.0
#: A quiet moment needs at least this share of the CPUs this process may use to have been idle
#: over it.
MIN_IDLE_SHARE = 0.5


class CpuMeter:
    """How much of the CPUs this process may use stayed idle between two readings.

    Inside a cgroup v2 with a CPU limit (``/sys/fs/cgroup/cpu.max``, a container's
    ``--cpus``), the group's own usage against its quota; otherwise the busy time of the CPUs
    this process may run on (`knowledge.cpus.allowed_cpus`), from /proc/stat (through psutil), which
    counts every process on them and the time the hypervisor kept for others (steal).
    """

    def __init__(self, cgroup: Path = CGROUP) -> None:
        self._usage = cgroup / "cpu.stat"
        self._quota = cgroup_quota(cgroup / "cpu.max") if self._usage.exists() else None
        self._cpus = allowed_cpus()

    @property
    def capacity(self) -> float:
        """The CPUs measured against."""
        if self._quota is not None:
            return self._quota
        return float(len(self._cpus))

    def reading(self) -> tuple[float, float]:
        """(a monotonic time, CPU-seconds busy so far): two of them give `idle_share`."""
        now = time.monotonic()
        if self._quota is not None:
            for line in self._usage.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return now, int(value) / 1e6
            raise OSError(f"no usage_usec in {self._usage}")
        import psutil

        times = psutil.cpu_times(percpu=True)
        times = [times[i] for i in self._cpus if i < len(times)]
        # guest time is counted in user time already; iowait is idle.
        busy = sum(
            sum(t)
            - t.idle
            - getattr(t, "iowait", 0.0)
            - getattr(t, "guest", 0.0)
            - getattr(t, "guest_nice", 0.0)
            for t in times
        )
        return now, busy

    def idle_share(self, before: tuple[float, float], after: tuple[float, float]) -> float:
        """The idle share of `capacity` between two `reading`s, from 0 to 1."""
        elapsed = after[0] - before[0]
        if elapsed <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - (after[1] - before[1]) / (elapsed * self.capacity)))


class Anticipator:
    """Texts waiting to be embedded in a quiet moment, and the vectors embedded so far.

    Args:
        embed: the pass a live query of one text runs (so the vector is the one it would get).
        idle_s: embed only once no live query has come for this long (`touch`).
        queue: texts waiting at most, the oldest dropped beyond it (the newest are embedded
            first).
        keep: vectors kept for a query at most, the oldest dropped beyond it.
        meter: how idle the CPUs were (`CpuMeter`); None: this process's own quiet alone.

    Keys are the callers' (`knowledge.cache.normalize` of the text, for `Embedder`).
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], Vectors],
        *,
        idle_s: float,
        queue: int,
        keep: int,
        meter: CpuMeter | None = None,
    ) -> None:
        self._embed = embed
        self._meter = meter
        self.idle_s = idle_s
        self.queue = queue
        self.keep = keep
        self._cond = threading.Condition()
        # key -> (text, whoever is told the vector once it is embedded)
        self._waiting: OrderedDict[str, tuple[str, list[Done]]] = OrderedDict()
        self._ready: OrderedDict[str, Vector] = OrderedDict()
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

    def ask(self, key: str, text: str, done: Done | None = None) -> None:
        """Embed `text` in the next quiet moment, unless it is waiting or ready already.

        `done` is called with the vector once it is embedded, from the anticipating thread (a
        failing one is logged); not when the vector was ready already, nor when the text is
        dropped or forgotten first.
        """
        with self._cond:
            if self._closing or key in self._ready:
                return
            waiting = self._waiting.get(key)
            if waiting is not None:
                if done is not None:
                    waiting[1].append(done)
                return
            self._waiting[key] = (text, [done] if done is not None else [])
            while len(self._waiting) > self.queue:
                self._waiting.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="embed-anticipate")
                self._thread.start()
            self._cond.notify_all()

    def offer(self, key: str, vector: Vector) -> None:
        """Keep a vector embedded elsewhere (another worker's anticipation) for `key`'s query,
        as if it had been embedded here."""
        with self._cond:
            if self._closing:
                return
            self._ready[key] = vector
            while len(self._ready) > self.keep:
                self._ready.popitem(last=False)

    def take(self, key: str) -> Vector | None:
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

    def _wait_for_quiet(self) -> None:
        """Return at a quiet moment (or on `close`): a window of `idle_s` without a live query
        here, over which at least `MIN_IDLE_SHARE` of the CPUs were idle."""
        main = threading.main_thread()
        while not self._closing and main.is_alive():
            before = self._read()
            time.sleep(self.idle_s)
            if time.monotonic() - self._last_live < self.idle_s:
                continue  # this process had a live query in the window
            if before is None or (after := self._read()) is None:
                return
            assert self._meter is not None  # it gave `before`
            if self._meter.idle_share(before, after) >= MIN_IDLE_SHARE:
                return

    def _read(self) -> tuple[float, float] | None:
        """A `CpuMeter` reading; None without a meter, or when it cannot be read (then the
        process's own quiet decides)."""
        if self._meter is None:
            return None
        try:
            return self._meter.reading()
        except Exception:
            logger.debug("reading the CPU meter failed", exc_info=True)
            return None

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
            self._wait_for_quiet()
            # The quiet lasts until the next live query: embed the waiting texts, newest first
            # (the latest reply's customer is the one reading it now).
            quiet = self._last_live
            while self._last_live == quiet:
                with self._cond:
                    if self._closing or not main.is_alive():
                        return
                    if not self._waiting:
                        break
                    key, (text, done) = self._waiting.popitem(last=True)
                    generation, self._running = self._generation, True
                self._embed_one(key, text, done, generation)

    def _embed_one(self, key: str, text: str, done: list[Done], generation: int) -> None:
        vector: Vector | None = None
        try:
            vector = self._embed([text])[0]
        except Exception:  # only a head start: the query embeds the text itself
            logger.debug("anticipating a query vector failed", exc_info=True)
        with self._cond:
            if generation != self._generation:
                vector = None  # forgotten meanwhile (`clear`, `close`)
            if vector is not None:
                self._ready[key] = vector
                while len(self._ready) > self.keep:
                    self._ready.popitem(last=False)
        try:
            if vector is not None:
                _tell(done, vector)
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()


def _tell(done: Sequence[Done], vector: Vector) -> None:
    """Hand `vector` to each of `done`; one that fails is logged and the others still hear."""
    for tell in done:
        try:
            tell(vector)
        except Exception:  # only a head start elsewhere: the query embeds it there
            logger.warning("passing on an anticipated vector failed", exc_info=True)
