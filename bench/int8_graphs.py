"""The int8 model quantized from the fused export (now) and from the plain one (before).

Builds both int8 graphs of the bundled model in ``--work`` (the fp32 fused export, the plain
export, and each one quantized by `knowledge.onnx.quantize`), then embeds BANKING77's test
questions with both, alternating pass by pass in one process so the host's drift falls on both:
passes of one question and of two on the one-thread session a live question takes, and passes
of 16 on the two-thread session. Prints each graph's median pass, the median of the paired
ratios, and each graph's cosines to the fp32 vectors.

With ``--turns N``, it also times whole turns (first messages and second ones sent at once
after the answer, on a SQLite file) on the 10,000-entry knowledge base of `throughput.py`:
N conversations, the embedder's int8 model switched between the two graphs every ``--block``
conversations.

    python bench/int8_graphs.py --data /tmp/b77s --work /tmp/supportbot-throughput
        [--passes 1000] [--turns 2400 --block 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(work: Path) -> dict[str, Path]:
    """The fp32 fused export and both int8 graphs, built once into `work`."""
    from knowledge import onnx
    from knowledge.embeddings import default_model_path

    work.mkdir(parents=True, exist_ok=True)
    model = default_model_path()
    paths = {
        "fp32": work / "fp32-fused.onnx",
        "plain": work / "fp32-plain.onnx",
        "int8, from the plain graph (before)": work / "int8-plain.onnx",
        "int8, from the fused graph (now)": work / "int8-fused.onnx",
    }
    if not paths["fp32"].exists():
        onnx.export(model, paths["fp32"])
    if not paths["plain"].exists():
        onnx.export(model, paths["plain"], fuse=False)
    for name, source in (
        ("int8, from the plain graph (before)", paths["plain"]),
        ("int8, from the fused graph (now)", paths["fp32"]),
    ):
        if not paths[name].exists():
            onnx.quantize(source, paths[name])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="`supportbot data` output")
    parser.add_argument("--work", type=Path, required=True, help="the graphs are built here")
    parser.add_argument("--passes", type=int, default=1000, help="paired passes per size")
    parser.add_argument("--turns", type=int, default=0, help="paired conversations (0: none)")
    parser.add_argument("--block", type=int, default=10, help="conversations per graph in turn")
    args = parser.parse_args()

    from bot.evaluate import load_queries
    from knowledge.embeddings import default_model_path
    from knowledge.onnx import OnnxEncoder

    paths = build(args.work / "int8-graphs")
    model = default_model_path()
    encoders = {
        name: OnnxEncoder(paths[name], model, threads=2, single_threads=1)
        for name in paths
        if name.startswith("int8")
    }
    texts = [q.text for q in load_queries(args.data / "test.jsonl")]
    random.Random(0).shuffle(texts)
    reference = OnnxEncoder(paths["fp32"], model).encode_many(texts, 64)

    table = Table(title="int8 graphs: passes paired one by one (ms)")
    for column in ("pass", *encoders, "paired ratio, now / before"):
        table.add_column(column)
    before, now = list(encoders)
    for size in (1, 2, 16):
        times: dict[str, list[float]] = {name: [] for name in encoders}
        for n, start in enumerate(range(0, args.passes * size, size)):
            batch = [texts[(start + i) % len(texts)] for i in range(size)]
            for name in list(encoders)[:: 1 if n % 2 else -1]:
                started = time.perf_counter()
                encoders[name].encode(batch)
                times[name].append((time.perf_counter() - started) * 1000)
        ratio = statistics.median(b / a for a, b in zip(times[before], times[now], strict=True))
        table.add_row(
            f"{size} question{'s' if size > 1 else ''}",
            *(f"{statistics.median(v):.2f}" for v in times.values()),
            f"{ratio:.3f}",
        )
    console = Console()
    console.print(table)
    for name, encoder in encoders.items():
        cosines = np.sum(encoder.encode_many(texts, 64) * reference, axis=1)
        console.print(
            f"{name}: cosine to fp32 over {len(texts):,} questions: mean {cosines.mean():.4f}, "
            f"min {cosines.min():.4f}; file {paths[name].stat().st_size / 1e6:.1f} MB"
        )
    if args.turns:
        console.print(turns(args, encoders, texts))


def turns(args: argparse.Namespace, encoders: dict[str, Any], texts: list[str]) -> Table:
    """Whole turns with each graph, the embedder's encoder switched every ``--block``
    conversations (the first of each block warms its graph up and is not counted)."""
    from throughput import build_10k, make_stack
    from timing import bench_message, spread

    index = args.work / "kb10k"
    build_10k(args.data, index)
    kb, _, engine = make_stack(index, args.work, backend="onnx", quantize=True)
    kb.embedder.warm_up()
    names = list(encoders)
    run = uuid.uuid4().hex[:8]
    times: dict[tuple[str, int], list[float]] = {(g, n): [] for g in names for n in (0, 1)}
    for i in track(range(args.turns), description="conversations"):
        graph = names[(i // args.block) % len(names)]
        kb.embedder._onnx = encoders[graph]
        for n, text in enumerate((texts[i % len(texts)], texts[(i + 1) % len(texts)])):
            started = time.perf_counter()
            engine.handle(bench_message(run, i, n, text))
            if i % args.block:
                times[graph, n].append((time.perf_counter() - started) * 1000)
    table = Table(title="Whole turns on SQLite with each int8 graph (10,000 entries)")
    for column in ("message", "graph", "n", "p50 ms", "p95 ms"):
        table.add_column(column)
    for n in (0, 1):
        for graph in names:
            table.add_row(("first", "second")[n], graph, *spread(times[graph, n]))
    return table


if __name__ == "__main__":
    main()
