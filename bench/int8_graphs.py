"""The int8 model quantized from the fused export (now) and from the plain one (before).

Builds both int8 graphs of the bundled model in ``--work`` (the fp32 fused export, the plain
export, and each one quantized by `knowledge.onnx.quantize`), then embeds BANKING77's test
questions with both, alternating pass by pass in one process so the host's drift falls on both:
passes of one question and of two on the one-thread session a live question takes, and passes
of 16 on the two-thread session. Prints each graph's median pass, the median of the paired
ratios, and each graph's cosines to the fp32 vectors.

    python bench/int8_graphs.py --data /tmp/b77s --work /tmp/supportbot-throughput [--passes 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
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


if __name__ == "__main__":
    main()
