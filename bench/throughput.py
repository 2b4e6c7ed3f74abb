"""The hot path, measured: per-message latency, messages per second, start-up and memory.

Everything in one run, on one machine, so the figures compare:

* a **10,000-entry knowledge base** made from BANKING77: every training query of
  ``kb.jsonl`` (the converter's output) becomes its own entry (question = the query, answer = its
  intent's answer), the first 10,000 of them; queries are the held-out ``test.jsonl`` ones;
* for each embedding configuration (torch; ONNX Runtime; ONNX int8 with ``--int8``): the
  decision path (`Responder.respond`) and the whole live turn (`Engine.handle`, on a SQLite file
  and, with ``--postgres-url``, on PostgreSQL) p50/p95; messages per second of one process
  answering one message at a time and answering them ``--batch`` at a time
  (`Responder.respond_many`; each size given, 64 and 256 by default, the best one counting for
  the target), next to the raw batch-embedding rate of the same back-end; and the whole turn of
  a conversation's **second message** (``--second-turns`` of them, each after another question),
  which reads a history and may search again with the conversation's context, with the bot's
  default query cache (emptied before each conversation) and without a cache; with
  ``--pause-ms``, both again (``--paused-turns`` of each) after that idle pause before every
  timed message, as real customers leave a worker idle between messages (the engine embeds
  the next message's context in the pause; on a sandboxed VM every such turn also starts cold,
  docs/benchmarks.md, "Tenth round");
* the query cache on a stream where every question is asked twice;
* micro-batching: messages per second with several threads asking at once, without and with the
  embedding batcher, and with the decision batcher (`Responder(batch_window_ms=...)`);
* the **raw batch-embedding rate** of the model (sentences/s, batch 64) with torch and with ONNX
  Runtime, and the throughput's ratio to it;
* **start-up and resident memory** of a fresh worker process (imports, model load, index load,
  first answer) with a **100,000-passage** knowledge base, with and without a memory-mapped index,
  and of a real web worker (`supportbot run`) to its first answer through ``POST /api/chat``;
  the project's bytecode is written first, as an install writes it (`compile_project`).
  The passages are synthesized: each joins two BANKING77 training queries and its intent's answer,
  and its vector is the normalised mean of the two queries' real embeddings (embedding 100,000
  passages would take many minutes on 2 cores; start-up and memory do not depend on the values).

At the end it prints the issue's targets with the figures of this run, each met or missed.

    python bench/throughput.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/bench] [--without torch]
        [--skip cache batching startup] [--batch 64 256] [--one-lane]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from timing import batched_rate, pct, raw_rate, raw_rates, time_each, time_turns

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZE = 10_000
BIG = 100_000
#: The issue's targets (docs/benchmarks.md, "Hot path").
TARGET_TURN_MS = 5.0
TARGET_RATIO = 0.85
TARGET_STARTUP_S = 3.0
TARGET_RSS_MB = 600.0


def entries_10k(data: Path) -> list[Any]:
    """One entry per BANKING77 training query (the first `SIZE`)."""
    from knowledge.types import Entry

    out: list[Entry] = []
    with (data / "kb.jsonl").open() as fh:
        intents = [json.loads(line) for line in fh]
    for intent in intents:
        for j, example in enumerate(intent["examples"]):
            out.append(
                Entry(
                    id=f"{intent['id']}-{j}",
                    answer=intent["answer"],
                    question=example,
                    title=intent.get("title"),
                    source="banking77-10k",
                )
            )
    # Interleave intents so the first SIZE cover all of them.
    out.sort(key=lambda e: (int(e.id.rsplit("-", 1)[1]), e.id))
    return out[:SIZE]


def build_10k(data: Path, directory: Path) -> None:
    from bot.service import ingest
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder

    kb = KnowledgeBase(directory, Embedder())
    if not kb.exists:
        ingest(kb, entries_10k(data), progress=True)


def paired_parser(doc: str | None, conversations: int) -> argparse.ArgumentParser:
    """The arguments of the benchmarks that pair two arms over conversations on the 10,000-entry
    knowledge base (`bench/kept_context.py`, `bench/follow_ups.py`)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--data", type=Path, required=True, help="`supportbot data` output")
    parser.add_argument("--work", type=Path, required=True, help="index and databases go here")
    parser.add_argument("--int8", action="store_true", help="the int8 model (default fp32)")
    parser.add_argument("--conversations", type=int, default=conversations)
    parser.add_argument("--block", type=int, default=25, help="conversations per arm in turn")
    return parser


def paired_setup(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """For `paired_parser`'s arguments: the 10,000-entry index (built into ``--work`` as
    `main` builds it, if it is not there) and the BANKING77 test questions."""
    from bot.evaluate import load_queries

    index = args.work / "kb10k"
    build_10k(args.data, index)
    return index, [q.text for q in load_queries(args.data / "test.jsonl")]


def build_100k(data: Path, directory: Path) -> None:
    """The synthesized 100,000-passage knowledge base (see the module's docstring)."""
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.types import Entry, content_id

    kb = KnowledgeBase(directory, Embedder(backend="auto", onnx_dir=directory.parent / "onnx"))
    if kb.exists:
        return
    with (data / "kb.jsonl").open() as fh:
        intents = [json.loads(line) for line in fh]
    queries = [(i, q) for i, intent in enumerate(intents) for q in intent["examples"]]
    print(f"embedding {len(queries):,} training queries for the 100k synthesis")
    vectors = kb.embedder.encode_with_progress([q for _, q in queries])
    rng = np.random.default_rng(0)
    entries: list[Entry] = []
    mixed = np.zeros((BIG, vectors.shape[1]), dtype=np.float32)
    texts: list[str] = []
    for n in range(BIG):
        a = int(rng.integers(len(queries)))
        # the second query from the same intent, so the passage is about one thing
        same = [k for k in range(max(0, a - 40), min(len(queries), a + 40)) if k != a]
        b = int(rng.choice(same))
        intent = intents[queries[a][0]]
        text = f"{queries[a][1]} {queries[b][1]}\n{intent['answer']} (#{n})"
        entries.append(Entry(id=f"p{n}", answer=text, title=None, source="synthetic-100k"))
        texts.append(text)
        v = vectors[a] + vectors[b]
        mixed[n] = v / (np.linalg.norm(v) or 1.0)
    print("writing the 100k index (HNSW build, BM25)…")
    started = time.perf_counter()
    kb._write(entries, list(range(BIG)), [2] * BIG, [content_id(t) for t in texts], texts, mixed)
    print(f"built in {time.perf_counter() - started:.0f} s")


# -- in-process measurements ---------------------------------------------------------------


def make_responder(index: Path, tmp: Path, **embedder: Any) -> tuple[Any, Any]:
    """The knowledge base at `index` loaded with an `Embedder(**embedder)` (ONNX exports cached
    in `tmp`/onnx) and a `Responder` over it."""
    from bot.engine import Responder
    from bot.service import confidence_model
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever

    kb = KnowledgeBase(index, Embedder(onnx_dir=tmp / "onnx", **embedder)).load()
    return kb, Responder(Retriever(kb), confidence_model(kb))


def make_stack(index: Path, tmp: Path, **embedder: Any) -> tuple[Any, Any, Any]:
    """`make_responder` plus an `Engine` storing turns in a fresh SQLite file in `tmp`."""
    from bot.engine import Engine
    from bot.storage.store import Store

    kb, responder = make_responder(index, tmp, **embedder)
    store = Store.from_url(f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db")
    return kb, responder, Engine(store, responder)


def concurrent_rate(call: Callable[[str], object], texts: Sequence[str], workers: int) -> float:
    """Messages per second with `workers` threads taking texts from one list."""
    lock = threading.Lock()
    position = 0

    def work() -> None:
        nonlocal position
        while True:
            with lock:
                if position >= len(texts):
                    return
                text = texts[position]
                position += 1
            call(text)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(texts) / (time.perf_counter() - started)


def in_process(args: argparse.Namespace, index10: Path) -> dict[str, Any]:
    from bot.evaluate import load_queries
    from bot.service import settle_heap
    from bot.settings import Settings
    from knowledge.cache import VectorCache

    texts = [q.text for q in load_queries(args.data / "test.jsonl")][: args.limit]
    results: dict[str, Any] = {"configs": {}, "queries": len(texts)}
    configs: list[tuple[str, dict[str, Any]]] = [
        ("torch", {"backend": "torch"}),
        ("onnx", {"backend": "onnx"}),
    ]
    if args.int8:
        configs.append(("onnx-int8", {"backend": "onnx", "quantize": True}))
    configs = [c for c in configs if c[0] not in args.without]
    if args.one_lane:
        # The same ONNX back-ends with their passes one after another (SUPPORTBOT_EMBED_LANES=1).
        configs += [(f"{n}-1lane", {**o, "lanes": 1}) for n, o in configs if o["backend"] == "onnx"]
    for name, options in configs:
        kb, responder, engine = make_stack(index10, args.work, batch_size=64, **options)
        kb.embedder.warm_up()
        for text in texts[:20]:
            responder.respond(text)
        # As a worker does once it is ready (`Services.ready`); undone when the configuration
        # is done, so the next one's start-up garbage is collected and frozen afresh.
        settle_heap()
        decisions = time_each(responder.respond, texts)
        # A process with a backlog takes many messages at once. The host's speed drifts over
        # minutes, so the raw rate and each batch size are measured in turns, three rounds, and
        # the ratio is the median of each round's own best batched rate over its raw rate. Each
        # round's raw rate is the mean of one measured just before its batched loops and one
        # just after: on a drifting host a single raw rate before them gave rounds above 100%.
        rounds = []
        raw_by_batch = []
        for _ in range(3):
            before = raw_rates(kb.embedder, texts)
            sizes = {size: batched_rate(responder.respond_many, texts, size) for size in args.batch}
            after = raw_rates(kb.embedder, texts)
            raw_by_batch += [before, after]
            raw_now = (max(before.values()) + max(after.values())) / 2
            rounds.append((raw_now, sizes))
        by_size = {size: statistics.median(r[1][size] for r in rounds) for size in args.batch}
        best_size = max(by_size, key=lambda size: by_size[size])
        ratios = [max(sizes.values()) / raw_now for raw_now, sizes in rounds]
        turns, turn_rate = time_turns(engine, texts)
        uncached, _ = time_turns(engine, texts[: args.second_turns], second=True)
        # Second messages as a worker with the bot's settings answers them: with the default
        # query cache, emptied before each conversation, so the context's question is cached
        # from its own turn (as in a running worker) and nothing else is.
        kb.embedder.cache = VectorCache(Settings.model_fields["embed_cache_size"].default)
        fresh = kb.embedder.invalidate_cache
        seconds, _ = time_turns(engine, texts[: args.second_turns], second=True, fresh=fresh)
        paused: list[float] = []
        paused_seconds: list[float] = []
        if args.pause_ms > 0:
            pause_s = args.pause_ms / 1000
            paused, _ = time_turns(engine, texts[: args.paused_turns], pause_s=pause_s, fresh=fresh)
            paused_seconds, _ = time_turns(
                engine, texts[: args.paused_turns], second=True, pause_s=pause_s, fresh=fresh
            )
        kb.embedder.cache = None
        rate = statistics.median(r[0] for r in rounds)
        row = {
            "decision_p50": statistics.median(decisions),
            "decision_p95": pct(decisions, 95),
            "turn_p50": statistics.median(turns),
            "turn_p95": pct(turns, 95),
            "turn_rate": turn_rate,
            "second_turn_p50": statistics.median(seconds),
            "second_turn_p95": pct(seconds, 95),
            "uncached_second_turn_p50": statistics.median(uncached),
            "decision_rate": 1000 / statistics.mean(decisions),
            "batched_rate": by_size[best_size],
            "batched_size": best_size,
            **{f"batched_rate_{size}": rate for size, rate in by_size.items()},
            "raw_rate": rate,
            "raw_rates": [r[0] for r in rounds],
            **{
                f"raw_rate_{size}": statistics.median(r[size] for r in raw_by_batch)
                for size in raw_by_batch[0]
            },
            "batched_ratios": ratios,
            "batched_ratio": statistics.median(ratios),
        }
        if paused:
            row.update(
                paused_turn_p50=statistics.median(paused),
                paused_second_turn_p50=statistics.median(paused_seconds),
                paused_second_turn_p95=pct(paused_seconds, 95),
            )
        if args.postgres_url:
            from bot.engine import Engine
            from bot.storage.store import Store

            pg_engine = Engine(Store.from_url(args.postgres_url), responder)
            pg_turns, pg_rate = time_turns(pg_engine, texts)
            row.update(
                pg_turn_p50=statistics.median(pg_turns),
                pg_turn_p95=pct(pg_turns, 95),
                pg_turn_rate=pg_rate,
            )
            pg_engine.store.close()
        results["configs"][name] = row
        print(name, json.dumps(row))
        engine.store.close()
        gc.unfreeze()
        kb.embedder.close()
    best = "onnx-int8" if args.int8 and args.best_int8 else "onnx"
    options = {"backend": "onnx", "quantize": best == "onnx-int8"}
    # Cache: every question twice, in a shuffled order (half the messages are repeats).
    rng = np.random.default_rng(1)
    stream = list(texts) * 2
    rng.shuffle(stream)
    for size in () if "cache" in args.skip else (0, 4096):
        kb, responder, engine = make_stack(index10, args.work, cache_size=size, **options)
        kb.embedder.warm_up()
        decisions = time_each(responder.respond, stream)
        turns, turn_rate = time_turns(engine, stream)
        results[f"cache_{size}"] = {
            "decision_p50": statistics.median(decisions),
            "decision_p95": pct(decisions, 95),
            "turn_p50": statistics.median(turns),
            "turn_rate": turn_rate,
            "hits": kb.embedder.cache.hits if kb.embedder.cache else 0,
        }
        print(f"cache {size}", json.dumps(results[f"cache_{size}"]))
    # Micro-batching: decision path with several threads at once.
    threaded = [] if "batching" in args.skip else [c for c in configs if c[0] in ("torch", best)]
    for backend_name, backend in threaded:
        for window in (None, 0.0, 2.0):
            kb, responder, engine = make_stack(
                index10, args.work, batch_window_ms=window, **backend
            )
            kb.embedder.warm_up()
            row: dict[str, float] = {}
            for workers in (1, 4, 8):
                row[f"decide_x{workers}"] = concurrent_rate(responder.respond, texts, workers)
            if kb.embedder.batcher is not None:
                row["mean_batch"] = kb.embedder.batcher.texts / max(kb.embedder.batcher.batches, 1)
            key = f"batch_{backend_name}_{'off' if window is None else window}"
            results[key] = row
            print(key, json.dumps(row))
            kb.embedder.close()
    # Decision batching: the threads' whole retrievals shared (`Responder(batch_window_ms=)`).
    for window in () if "batching" in args.skip else (0.0, 2.0):
        from bot.engine import Responder

        kb, responder, engine = make_stack(index10, args.work, **options)
        kb.embedder.warm_up()
        shared = Responder(responder.retriever, responder.confidence, batch_window_ms=window)
        row = {}
        for workers in (1, 4, 8):
            row[f"decide_x{workers}"] = concurrent_rate(shared.respond, texts, workers)
        assert shared.batcher is not None
        row["mean_batch"] = shared.batcher.items / max(shared.batcher.batches, 1)
        row["raw_rate"] = raw_rate(kb.embedder, texts)
        key = f"decision_batch_{best}_{window}"
        results[key] = row
        print(key, json.dumps(row))
        shared.close()
        kb.embedder.close()
    return results


# -- start-up and memory of a fresh worker ---------------------------------------------------


def child(index: Path, onnx_dir: Path, backend: str, mmap: bool, quantize: bool) -> None:
    """Run in a fresh interpreter: load everything, answer one question, report (``ready``:
    the wall-clock time it was ready, for the parent, which knows when it started it)."""
    import psutil

    process = psutil.Process()
    from bot.engine import Responder
    from bot.service import confidence_model, settle_heap
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever

    embedder = Embedder(backend=backend, onnx_dir=onnx_dir, quantize=quantize)  # type: ignore[arg-type]
    kb = KnowledgeBase(index, embedder, mmap=mmap).load()
    embedder.warm_up()
    responder = Responder(Retriever(kb), confidence_model(kb))
    responder.respond("I still have not received my new card")
    settle_heap()  # as `Services.ready` does
    ready = time.time()
    memory = process.memory_full_info()
    for text in ("how do I top up", "my card payment was declined", "exchange rate fee"):
        responder.respond(text)
    print(
        json.dumps(
            {
                "ready": ready,
                "rss_mb": memory.rss / 2**20,
                "uss_mb": memory.uss / 2**20,
                "rss_after_mb": process.memory_info().rss / 2**20,
                "torch_imported": "torch" in sys.modules,
                "units": len(kb.unit_entry),
                "index": kb.manifest.index_kind if kb.manifest else "?",
            }
        )
    )


#: The project's packages (pyproject.toml), compiled before start-up is timed.
PACKAGES = ("adapters", "bot", "knowledge", "monitoring", "policies", "training")


def compile_project() -> None:
    """Write the project's bytecode (``__pycache__``, ignored by git), as installing it does.

    `pip install .` compiles a package's modules as it installs them, and Python writes the
    bytecode of an editable install on its first start. A Python started with
    ``PYTHONDONTWRITEBYTECODE=1`` (the development sandbox sets it, and so do many container
    images) never writes it, and compiles the project's 64 modules on every start: 0.19 s
    on a 2-core host (docs/benchmarks.md, "Seventeenth round"). So start-up is timed as a
    deployed worker starts.
    """
    import compileall

    root = Path(__file__).resolve().parents[1]
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)


def startup(args: argparse.Namespace, index100: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    compile_project()
    cases = [
        ("torch, read", "torch", False, False),
        ("torch, mmap", "torch", True, False),
        ("onnx, read", "onnx", False, False),
        ("onnx, mmap", "onnx", True, False),
    ]
    if args.int8:
        cases.append(("onnx-int8, mmap", "onnx", True, True))
    cases = [c for c in cases if c[1] not in args.without]
    for name, backend, mmap, quantize in cases:
        runs = []
        for _ in range(args.startup_runs):
            command = [
                sys.executable,
                __file__,
                "--child",
                str(index100),
                "--onnx-dir",
                str(args.work / "onnx"),
                "--backend",
                backend,
            ]
            command += ["--mmap"] if mmap else []
            command += ["--int8"] if quantize else []
            started = time.time()
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            runs.append({**run, "startup_s": run["ready"] - started})
        row = {
            key: statistics.median(r[key] for r in runs)
            for key in ("startup_s", "rss_mb", "uss_mb", "rss_after_mb")
        }
        row["torch_imported"] = runs[0]["torch_imported"]
        row["units"] = runs[0]["units"]
        row["index"] = runs[0]["index"]
        results[name] = row
        print(name, json.dumps(row))
    if "onnx" not in args.without:
        runs = [web_worker(args.work, index100) for _ in range(args.startup_runs + 1)][1:]
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        results["web worker (supportbot run)"] = row
        print("web worker (supportbot run)", json.dumps(row))
    return results


def web_worker(work: Path, index: Path) -> dict[str, float]:
    """Start a real web worker (`supportbot run`, the default back-end and settings) on
    `index`, and ask it one question through ``POST /api/chat`` until it answers.

    Start-up is from just before the process is started to that first answer: imports, the
    database's migrations check, the model, the index, the web app and its adapters. (Not from
    psutil's ``create_time``: it counts from the boot time in whole seconds, ``btime`` in
    /proc/stat, so it reads up to a second early.) The worker's data folder (SQLite file, the
    cached ONNX export) is in `work`; the first call migrates a fresh database, so `startup`
    leaves it out.
    """
    import socket
    import urllib.request

    import psutil

    data = work / "web-worker"
    data.mkdir(exist_ok=True)
    if not (data / "onnx").exists():
        (data / "onnx").symlink_to((work / "onnx").resolve(), target_is_directory=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        SUPPORTBOT_DATA_DIR=str(data),
        SUPPORTBOT_KB_DIR=str(index),
        SUPPORTBOT_HOST="127.0.0.1",
        PORT=str(port),
    )
    command = [str(Path(sys.executable).with_name("supportbot")), "run"]
    body = json.dumps(
        {"conversation_id": uuid.uuid4().hex, "user": "bench", "text": "my card was declined"}
    ).encode()
    with (data / "server.log").open("w") as log:
        started = time.time()
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while True:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the web worker did not answer; see {data / 'server.log'}")
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/chat",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        json.loads(response.read())
                        break
                except OSError:
                    time.sleep(0.02)
            answered = time.time()
            memory = psutil.Process(server.pid).memory_full_info()
        finally:
            server.terminate()
            server.wait(30)
    return {
        "startup_s": answered - started,
        "rss_mb": memory.rss / 2**20,
        "uss_mb": memory.uss / 2**20,
    }


def targets(report: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The issue's targets with this run's figures: (target, result, met)."""
    rows: list[tuple[str, str, bool]] = []
    configs: dict[str, dict[str, float]] = report.get("configs", {})
    for name, row in configs.items():
        turn = row["turn_p50"]
        text = f"{name}: whole turn p50 {turn:.2f} ms SQLite (decision {row['decision_p50']:.2f})"
        if "pg_turn_p50" in row:
            text += f", {row['pg_turn_p50']:.2f} ms PostgreSQL"
        rows.append((f"engine p50 <= {TARGET_TURN_MS:g} ms", text, turn <= TARGET_TURN_MS))
        if "second_turn_p50" in row:
            second = row["second_turn_p50"]
            rows.append(
                (
                    f"engine p50 <= {TARGET_TURN_MS:g} ms, 2nd message",
                    f"{name}: a conversation's second message p50 {second:.2f} ms SQLite "
                    f"({row['uncached_second_turn_p50']:.2f} without a query cache)",
                    second <= TARGET_TURN_MS,
                )
            )
        if "paused_turn_p50" in row:
            first, second = row["paused_turn_p50"], row["paused_second_turn_p50"]
            rows.append(
                (
                    f"engine p50 <= {TARGET_TURN_MS:g} ms, after a pause",
                    f"{name}: first messages p50 {first:.2f} ms, second {second:.2f} ms, "
                    "each after an idle pause",
                    max(first, second) <= TARGET_TURN_MS,
                )
            )
    for name, row in configs.items():
        ratio = row["batched_ratio"]
        others = ", ".join(
            f"{key.rsplit('_', 1)[1]} at once {value / row['raw_rate']:.0%}"
            for key, value in row.items()
            if key.startswith("batched_rate_") and key != f"batched_rate_{row['batched_size']}"
        )
        rounds = ", ".join(f"{r:.0%}" for r in row.get("batched_ratios", [ratio]))
        text = (
            f"{name}: {row['batched_rate']:.1f} msgs/s, {row['batched_size']} at once, vs raw "
            f"{row['raw_rate']:.1f}/s: {ratio:.0%}, the median of rounds {rounds} "
            f"({others + ', ' if others else ''}"
            f"one at a time {row['decision_rate'] / row['raw_rate']:.0%})"
        )
        one_lane = configs.get(f"{name}-1lane")
        if one_lane is not None:
            # The raw rate the model reaches with its passes one after another, as before lanes.
            text += (
                f"; against the one-lane raw rate {one_lane['raw_rate']:.1f}/s: "
                f"{row['batched_rate'] / one_lane['raw_rate']:.0%}"
            )
        rows.append((f"throughput >= {TARGET_RATIO:.0%} of raw", text, ratio >= TARGET_RATIO))
    for name, row in report.get("startup", {}).items():
        rows.append(
            (
                f"start-up <= {TARGET_STARTUP_S:g} s, 100k",
                f"{name}: {row['startup_s']:.2f} s",
                row["startup_s"] <= TARGET_STARTUP_S,
            )
        )
        rows.append(
            (
                f"RSS <= {TARGET_RSS_MB:g} MB, 100k",
                f"{name}: {row['rss_mb']:.0f} MB",
                row["rss_mb"] <= TARGET_RSS_MB,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/b77s"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/supportbot-throughput"))
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument(
        "--second-turns",
        type=int,
        default=500,
        help="Timed second messages of conversations (after another question each).",
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="Also time turns after this idle pause before each (0: not measured).",
    )
    parser.add_argument(
        "--paused-turns",
        type=int,
        default=100,
        help="First and second messages timed after a pause (each).",
    )
    parser.add_argument("--int8", action="store_true", help="Also measure the int8 ONNX model.")
    parser.add_argument("--best-int8", action="store_true", help="Cache/batching with int8.")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[64, 256],
        help="Messages per respond_many call; the best size counts for the target.",
    )
    parser.add_argument(
        "--without", nargs="*", default=(), choices=("torch", "onnx"), help="Back-ends left out."
    )
    parser.add_argument(
        "--one-lane",
        action="store_true",
        help="Also measure each ONNX back-end with its passes in one lane (no overlap).",
    )
    parser.add_argument("--postgres-url", help="Also time whole turns on this PostgreSQL.")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=(),
        choices=("in-process", "cache", "batching", "startup"),
        help="Leave parts out (in-process: every in-process figure).",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--mmap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.onnx_dir, args.backend, args.mmap, args.int8)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    index10, index100 = args.work / "kb10k", args.work / "kb100k"
    build_10k(args.data, index10)
    report: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    if "in-process" not in args.skip:
        report.update(in_process(args, index10))
    if "startup" not in args.skip:
        build_100k(args.data, index100)
        report["startup"] = startup(args, index100)
    report["load_after"] = os.getloadavg()
    report["targets"] = targets(report)
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    load = f"{report['load_before'][0]:.1f} at the start, {report['load_after'][0]:.1f} at the end"
    print(f"\nTargets ({os.cpu_count()} cores, load average {load}):")
    for target, result, met in report["targets"]:
        print(f"  {'MET   ' if met else 'MISSED'}  {target:<32} {result}")


if __name__ == "__main__":
    main()
