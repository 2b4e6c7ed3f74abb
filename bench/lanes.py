"""Passes in lanes (`SUPPORTBOT_EMBED_LANES`), measured against one lane in the same process.

Two parts, both on the BANKING77 test questions:

* **probe**: the model alone, 2,048 questions through `Embedder.encode` in passes of 64 and 16,
  with a 2-thread and a 1-thread ONNX Runtime session, and through two lanes on each session
  (`OnnxEncoder.map_passes` with nothing to do per pass);
* **interleaved A/B**: the batched decision path (`Responder.respond_many`, `--batch` messages at a
  time) on the 10,000-entry knowledge base that `bench/throughput.py` builds, with one lane and
  with two, switched between rounds (the machine drifts over minutes, so back-to-back runs
  would compare the drift), next to each round's raw rates (`timing.raw_rates`).

Medians of `--rounds` rounds; texts or messages per second.

    python bench/lanes.py --data /tmp/b77s --work /tmp/supportbot-throughput [--int8]
        [--rounds 6] [--batch 256] [--limit 500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from throughput import make_responder
from timing import batched_rate, raw_rates

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def probe(texts: Sequence[str], onnx_dir: Path, quantize: bool, rounds: int) -> None:
    from knowledge.embeddings import Embedder

    print("probe: the model alone, texts/s")
    for threads in (2, 1):
        embedder = Embedder(
            backend="onnx", onnx_dir=onnx_dir, quantize=quantize, threads=threads, lanes=2
        )
        embedder.warm_up()
        assert embedder._onnx is not None
        for size in (64, 16):
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(rounds):
                for lanes in (1, 2):
                    started = time.perf_counter()
                    embedder._onnx.map_passes(texts, size, _nothing, lanes=lanes)
                    rates[lanes].append(len(texts) / (time.perf_counter() - started))
            print(
                f"  {threads}-thread session, passes of {size}: one lane "
                f"{statistics.median(rates[1]):,.0f}, two lanes {statistics.median(rates[2]):,.0f}"
            )
        embedder.close()


def _nothing(positions: Sequence[int], vectors: Any, seconds: float) -> None:
    return None


def interleaved(args: argparse.Namespace, texts: Sequence[str]) -> None:
    index = args.work / "kb10k"
    if not (index / "manifest.json").exists():
        raise SystemExit(f"no knowledge base in {index}: run bench/throughput.py first")
    kb, responder = make_responder(index, args.work, backend="onnx", quantize=args.int8)
    embedder = kb.embedder
    embedder.warm_up()
    responder.respond_many(list(texts[: args.batch]))
    engine: dict[int, list[float]] = {1: [], 2: []}
    raws: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for lanes in (1, 2) if round_ % 2 == 0 else (2, 1):
            embedder.lanes = lanes
            engine[lanes].append(batched_rate(responder.respond_many, texts, args.batch))
            raws[lanes].append(raw_rates(embedder, texts))
    print(f"interleaved A/B: {args.batch} messages at a time, msgs/s (raw rates: texts/s)")
    for lanes in (1, 2):
        rates = ", ".join(
            f"{key} {statistics.median(r[key] for r in raws[lanes]):,.0f}" for key in raws[lanes][0]
        )
        runs = ", ".join(f"{r:,.0f}" for r in engine[lanes])
        print(
            f"  {lanes} lane(s): {statistics.median(engine[lanes]):,.0f} (rounds {runs}); "
            f"raw: {rates}"
        )
    gain = statistics.median(engine[2]) / statistics.median(engine[1]) - 1
    lanes_raw = statistics.median(r["lanes"] for r in raws[2])
    print(f"  two lanes against one: {gain:+.0%}")
    print(f"  two lanes / raw rate in lanes: {statistics.median(engine[2]) / lanes_raw:.0%}")
    embedder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/b77s"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/supportbot-throughput"))
    parser.add_argument("--int8", action="store_true", help="The int8 ONNX model (else fp32).")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args()
    with (args.data / "test.jsonl").open() as fh:
        texts = [json.loads(line)["text"] for line in fh]
    if not args.skip_probe:
        probe((texts * 2)[:2048], args.work / "onnx", args.int8, max(3, args.rounds // 2))
    interleaved(args, texts[: args.limit])


if __name__ == "__main__":
    main()
