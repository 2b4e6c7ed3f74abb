"""The hot path's speed-ups keep answers the same: ONNX Runtime, the query cache, micro-batching."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bot.errors import KnowledgeError
from knowledge import onnx
from knowledge.base import KnowledgeBase
from knowledge.batching import MicroBatcher
from knowledge.cache import VectorCache, normalize
from knowledge.embeddings import Embedder

SAMPLES = [
    "How do I reset my password?",
    "my card payment was declined at the supermarket",
    "Can I get a refund for the Plus plan?",
    "Wo ist meine Karte? Ich habe sie vor einer Woche bestellt.",
    "😀 émojis and ünïcödé, tabs\tand\nnewlines",
    "x",
    "exchange rate " * 300,  # past the model's 256 tokens: truncated the same way
]


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    embedder = Embedder(backend="onnx", onnx_dir=tmp_path_factory.mktemp("onnx"))
    embedder.warm_up()
    return embedder


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


# --- ONNX Runtime ----------------------------------------------------------------------------


@pytest.mark.model
def test_onnx_vectors_match_torch_one_at_a_time(
    embedder: Embedder, onnx_embedder: Embedder
) -> None:
    assert onnx_embedder.backend == "onnx"
    for text in SAMPLES:
        cos = _cosines(embedder.encode([text]), onnx_embedder.encode([text]))
        assert cos[0] >= 0.999, text


@pytest.mark.model
def test_onnx_batches_with_padding_match_torch(embedder: Embedder, onnx_embedder: Embedder) -> None:
    many = SAMPLES * 3 + [f"question {i} about my card arriving late" for i in range(40)]
    torch_vectors, onnx_vectors = embedder.encode(many), onnx_embedder.encode(many)
    assert onnx_vectors.shape == torch_vectors.shape == (len(many), 384)
    assert onnx_vectors.dtype == np.float32
    assert _cosines(torch_vectors, onnx_vectors).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)


def _many() -> list[str]:
    """Texts of many lengths, repeated with a twist so no two are equal."""
    return [f"{text} ({i})" for i in range(12) for text in SAMPLES]


@pytest.mark.model
def test_lanes_embed_what_one_lane_embeds(onnx_embedder: Embedder) -> None:
    assert onnx_embedder.lanes == 2
    one_lane = Embedder(backend="onnx", onnx_dir=onnx_embedder.onnx_dir, lanes=1)
    texts = _many()
    in_lanes = np.zeros((len(texts), 384), dtype=np.float32)
    groups = onnx_embedder.map_queries(texts, lambda positions, vectors, seconds: vectors)
    assert len(groups) == -(-len(texts) // 16)  # one per pass of 16
    for positions, vectors in groups:
        in_lanes[list(positions)] = vectors
    np.testing.assert_allclose(in_lanes, one_lane.encode_queries(texts), atol=1e-5)
    np.testing.assert_allclose(onnx_embedder.encode(texts), one_lane.encode(texts), atol=1e-5)
    # One lane: a single group, after `encode_queries`.
    assert len(one_lane.map_queries(texts, lambda positions, vectors, seconds: None)) == 1
    one_lane.close()


@pytest.mark.model
def test_map_passes_hands_every_text_to_work_once_across_lanes(onnx_embedder: Embedder) -> None:
    assert onnx_embedder._onnx is not None
    texts = _many()
    lanes: set[str] = set()

    def work(positions: Sequence[int], vectors: npt.NDArray[np.float32], seconds: float) -> int:
        lanes.add(threading.current_thread().name)
        assert len(vectors) == len(positions) <= 16 and seconds > 0
        return len(positions)

    parts = onnx_embedder._onnx.map_passes(texts, 16, work)
    assert sorted(i for positions, _ in parts for i in positions) == list(range(len(texts)))
    assert [n for _, n in parts] == [len(p) for p, _ in parts]
    assert lanes and all(name.startswith("onnx-lane") for name in lanes)


@pytest.mark.model
def test_map_queries_uses_the_cache_then_the_lanes(tmp_path: Path) -> None:
    embedder = Embedder(backend="onnx", onnx_dir=tmp_path, cache_size=256)
    texts = _many()
    seen: list[list[int]] = []

    def work(positions: Sequence[int], vectors: npt.NDArray[np.float32], seconds: float) -> Any:
        seen.append(list(positions))
        return vectors

    def gathered() -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for positions, vectors in embedder.map_queries(texts, work):
            out[list(positions)] = vectors
        return out

    first = gathered()
    assert len(seen) == -(-len(texts) // 16)  # one group per pass of 16
    assert embedder.cache is not None and embedder.cache.misses == len(texts)
    np.testing.assert_allclose(first, embedder.encode_queries(texts), atol=1e-5)
    seen.clear()
    again = gathered()
    assert seen == [list(range(len(texts)))]  # all cached: one group, no pass
    np.testing.assert_array_equal(first, again)
    embedder.close()


@pytest.mark.model
def test_an_error_in_a_lane_reaches_the_caller(onnx_embedder: Embedder) -> None:
    def work(positions: Sequence[int], vectors: npt.NDArray[np.float32], seconds: float) -> None:
        raise RuntimeError("search failed")

    with pytest.raises(RuntimeError, match="search failed"):
        onnx_embedder.map_queries(_many(), work)
    # The lanes still work afterwards.
    assert onnx_embedder.encode(_many()).shape == (len(_many()), 384)


@pytest.mark.model
def test_the_export_is_cached_and_reused(onnx_embedder: Embedder) -> None:
    path = onnx_embedder.onnx_path()
    assert path.exists() and path.parent == onnx_embedder.onnx_dir
    written = path.stat().st_mtime_ns
    again = Embedder(backend="onnx", onnx_dir=onnx_embedder.onnx_dir)
    assert again.backend == "onnx"
    assert path.stat().st_mtime_ns == written
    np.testing.assert_allclose(again.encode(SAMPLES[:2]), onnx_embedder.encode(SAMPLES[:2]))


def _operators(path: Path) -> set[str]:
    import onnx as onnx_format

    return {node.op_type for node in onnx_format.load(str(path)).graph.node}


@pytest.mark.model
def test_fp32_keeps_one_session(onnx_embedder: Embedder) -> None:
    # One thread is slower for fp32, and a second session would cost 96 MB.
    encoder = onnx_embedder._onnx
    assert encoder is not None and encoder._single is encoder._session


@pytest.mark.model
def test_the_export_fuses_the_attention(onnx_embedder: Embedder) -> None:
    # One `Attention` operator per layer instead of the plain graph's ~500 small ones; the
    # tests above hold its vectors to torch's.
    assert {"Attention", "EmbedLayerNormalization"} <= _operators(onnx_embedder.onnx_path())
    assert f"-v{onnx.EXPORT_VERSION}" in onnx_embedder.onnx_path().name


@pytest.mark.model
def test_int8_is_quantized_from_the_fused_graph_and_stays_close(
    embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    int8 = Embedder(backend="onnx", quantize=True, onnx_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        assert int8.backend == "onnx"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [p.name for p in tmp_path.iterdir()] == [int8.onnx_path().name]  # no leftovers
    assert int8.onnx_path().name.endswith(f"-int8q{onnx.QUANTIZE_VERSION}.onnx")
    operators = _operators(int8.onnx_path())
    # Each layer's attention is one quantized operator, and so are the embeddings.
    assert {"QAttention", "QEmbedLayerNormalization", "MatMulInteger"} <= operators
    assert not operators & {"Attention", "EmbedLayerNormalization"}
    # int8 moves vectors more than fp32 does (0.91 for "x" here, 0.97 for a real question);
    # BANKING77's figures with it are in docs/benchmarks.md, "Embedding back-ends".
    cosines = _cosines(embedder.encode(SAMPLES), int8.encode(SAMPLES))
    assert cosines.min() >= 0.9 and cosines.mean() >= 0.94
    # One question runs on its own one-thread session, with the vectors of the main one.
    encoder = int8._onnx
    assert encoder is not None and encoder._single is not encoder._session
    assert encoder._single.get_session_options().intra_op_num_threads == 1
    for text in SAMPLES:
        feed = encoder._feed(encoder._tokenizer.encode_batch([text]))
        (main,) = encoder._session.run(None, feed)
        np.testing.assert_allclose(encoder.encode([text]), main, atol=1e-6)


@pytest.mark.model
def test_int8_is_quantized_from_the_cached_fp32_export_without_exporting_again(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fp32 = onnx_embedder.onnx_path()
    shutil.copy(fp32, tmp_path / fp32.name)

    def no_export(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the cached fp32 export is quantized instead")

    monkeypatch.setattr(onnx, "export", no_export)
    int8 = Embedder(backend="onnx", quantize=True, onnx_dir=tmp_path)
    assert int8.backend == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.name, int8.onnx_path().name])
    assert "QAttention" in _operators(int8.onnx_path())
    cosines = _cosines(onnx_embedder.encode(SAMPLES), int8.encode(SAMPLES))
    assert cosines.min() >= 0.9


def test_a_failed_quantization_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import onnxruntime.quantization

    def half_written(source: str, out: str, **options: object) -> None:
        Path(out).write_bytes(b"half a model")
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", half_written)
    with pytest.raises(RuntimeError, match="no space left"):
        onnx.quantize(tmp_path / "model.onnx", tmp_path / "model-int8.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.model
def test_a_failed_export_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from knowledge.embeddings import default_model_path

    def half_written(model: object, args: object, path: str, **options: object) -> None:
        Path(path).write_bytes(b"half a graph")
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    with pytest.raises(RuntimeError, match="no space left"):
        onnx.export(default_model_path(), tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_a_broken_fp32_export_is_named_when_int8_cannot_be_quantized_from_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    int8 = Embedder(backend="onnx", quantize=True, onnx_dir=tmp_path)
    fp32 = int8.onnx_path(quantized=False)
    fp32.write_bytes(b"not a model")  # a disk that failed under a finished export
    with pytest.raises(KnowledgeError, match="could not be built or loaded") as failed:
        _ = int8.backend
    assert str(fp32) in str(failed.value) and str(int8.onnx_path()) in str(failed.value)
    assert [p.name for p in tmp_path.iterdir()] == [fp32.name]  # nothing half-written
    # Left to choose (auto), it embeds with torch and says why.
    with caplog.at_level(logging.WARNING):
        assert Embedder(backend="auto", quantize=True, onnx_dir=tmp_path).backend == "torch"
    assert "ONNX Runtime unavailable" in caplog.text


@pytest.mark.model
def test_a_fused_graph_that_drifts_is_not_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from knowledge.embeddings import default_model_path

    model_path = default_model_path()
    plain = onnx.export(model_path, tmp_path / "plain.onnx", fuse=False)
    before = plain.read_bytes()
    monkeypatch.setattr(onnx, "FUSED_TOLERANCE", -1.0)  # nothing is close enough
    assert not onnx._fuse(plain, model_path)
    assert plain.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plain.onnx"]
    monkeypatch.undo()
    assert onnx._fuse(plain, model_path)
    assert "Attention" in _operators(plain)


@pytest.mark.model
def test_a_failing_fusion_keeps_the_plain_graph(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from knowledge.embeddings import default_model_path

    def broken(path: Path, model_path: Path) -> bool:
        raise RuntimeError("optimizer unavailable")

    monkeypatch.setattr(onnx, "_fuse", broken)
    with caplog.at_level(logging.WARNING):
        out = onnx.export(default_model_path(), tmp_path / "model.onnx")
    assert "Attention" not in _operators(out) and "MatMul" in _operators(out)
    assert "fusing failed (optimizer unavailable); kept the plain graph" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_only_bert_models_are_fused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    assert not onnx._fuse(tmp_path / "never-read.onnx", tmp_path)


@pytest.mark.model
def test_exports_by_earlier_versions_are_removed(onnx_embedder: Embedder, tmp_path: Path) -> None:
    current = onnx_embedder.onnx_path()
    shutil.copy(current, tmp_path / current.name)
    stem = f"{onnx_embedder.model_path.name}-{onnx_embedder.fingerprint}"
    # The current int8 model stays for the workers that use it; an int8 model quantized
    # from the plain graph (QUANTIZE_VERSION 1) goes.
    int8 = onnx_embedder.onnx_path(quantized=True).name
    earlier = (f"{stem}.onnx", f"{stem}-int8.onnx", f"{stem}-v{onnx.EXPORT_VERSION}-int8.onnx")
    for name in (*earlier, int8, "another-model-0123.onnx"):
        (tmp_path / name).write_bytes(b"old")
    again = Embedder(backend="onnx", onnx_dir=tmp_path)
    assert again.backend == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [current.name, int8, "another-model-0123.onnx"]
    )


def test_auto_falls_back_to_torch_without_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(onnx, "available", lambda: False)
    assert Embedder(backend="auto", onnx_dir=tmp_path).backend == "torch"
    with pytest.raises(KnowledgeError, match="pip install onnxruntime"):
        _ = Embedder(backend="onnx", onnx_dir=tmp_path).backend
    assert not list(tmp_path.iterdir())


def test_a_model_with_another_pooling_is_not_exported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 384}))
    (tmp_path / "modules.json").write_text(
        json.dumps([{"type": "sentence_transformers.models.Transformer"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(KnowledgeError, match="mean pooling only"):
        onnx.check_exportable(tmp_path)
    auto = Embedder(tmp_path, backend="auto", onnx_dir=tmp_path / "onnx")
    assert auto.backend == "torch"
    with pytest.raises(KnowledgeError, match="SUPPORTBOT_EMBED_BACKEND=torch"):
        _ = Embedder(tmp_path, backend="onnx", onnx_dir=tmp_path / "onnx").backend


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(KnowledgeError, match="torch, onnx or auto"):
        Embedder(backend="tensorflow")  # type: ignore[arg-type]


# --- the query cache -------------------------------------------------------------------------


def test_normalize_folds_only_what_the_uncased_tokenizer_ignores() -> None:
    assert normalize("  How DO I\treset\n my PIN? ") == "how do i reset my pin?"
    assert normalize("Straße") == "straße"  # not casefolded to "strasse"


def test_the_cache_is_a_bounded_lru() -> None:
    cache = VectorCache(2)
    vectors = np.eye(3, dtype=np.float32)
    cache.store(["a", "b"], vectors[:2])
    assert cache.lookup(["A"])[0] is not None  # "a" is now the most recent
    cache.store(["c"], vectors[2:])
    found = cache.lookup(["a", "b", "c"])
    assert found[1] is None and found[0] is not None and found[2] is not None
    assert len(cache) == 2
    with pytest.raises(ValueError, match="at least one"):
        VectorCache(0)


@pytest.mark.model
def test_repeated_questions_hit_the_cache_with_the_same_vector(embedder: Embedder) -> None:
    cached = Embedder(cache_size=8)
    assert cached.cache is not None
    first = cached.encode(["How do I reset my password?", "Plus pricing"])
    assert (cached.cache.hits, cached.cache.misses) == (0, 2)
    again = cached.encode(["how do i  reset my PASSWORD?", "something new"])
    assert cached.cache.hits == 1
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_allclose(
        again, embedder.encode(["How do I reset my password?", "something new"]), atol=1e-5
    )
    again[0][:] = 0  # callers get their own copies
    np.testing.assert_array_equal(cached.encode(["How do I reset my password?"])[0], first[0])


@pytest.mark.model
def test_loading_a_knowledge_base_invalidates_the_cache(sample_kb_dir: Path) -> None:
    cached = Embedder(cache_size=8)
    kb = KnowledgeBase(sample_kb_dir, cached).load()
    assert cached.cache is not None
    kb.embedder.encode(["How much is Plus?"])
    assert len(cached.cache) == 1
    kb.load()  # what every ingest and reindex ends with
    assert len(cached.cache) == 0
    kb.embedder.encode(["How much is Plus?"])
    assert cached.cache.misses == 2


# --- micro-batching --------------------------------------------------------------------------


def _recording_encoder(
    calls: list[int], gate: threading.Event | None = None
) -> tuple[object, list[list[str]]]:
    seen: list[list[str]] = []

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if gate is not None:
            gate.wait(5)
        calls.append(len(texts))
        seen.append(list(texts))
        # each text's vector encodes the text itself, so a mix-up is visible
        return np.array([[float(len(t)), float(hash(t) % 9973)] for t in texts], dtype=np.float32)

    return encode, seen


def test_each_concurrent_caller_gets_its_own_vectors() -> None:
    calls: list[int] = []
    encode, _ = _recording_encoder(calls)
    batcher = MicroBatcher(encode, window_s=0.05, max_batch=64)  # type: ignore[arg-type]
    texts = [f"caller {i} " * (i % 5 + 1) for i in range(32)]
    results: dict[int, npt.NDArray[np.float32]] = {}
    start = threading.Barrier(len(texts))

    def call(i: int) -> None:
        start.wait()
        results[i] = batcher.encode([texts[i], texts[i] + "!"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i, text in enumerate(texts):
        expected = np.array(
            [[len(text), hash(text) % 9973], [len(text) + 1, hash(text + "!") % 9973]],
            dtype=np.float32,
        )
        np.testing.assert_array_equal(results[i], expected)
    assert sum(calls) == 2 * len(texts)
    assert len(calls) < len(texts)  # some callers shared a forward pass
    assert max(calls) <= 64


def test_a_failing_encoder_fails_every_waiting_caller_and_the_batcher_recovers() -> None:
    state = {"fail": True}

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if state["fail"]:
            raise RuntimeError("model exploded")
        return np.ones((len(texts), 2), dtype=np.float32)

    batcher = MicroBatcher(encode, window_s=0.0)
    with pytest.raises(RuntimeError, match="model exploded"):
        batcher.encode(["a"])
    state["fail"] = False
    assert batcher.encode(["a", "b"]).shape == (2, 2)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["a"])


async def test_coroutines_share_the_batcher_without_blocking_the_loop() -> None:
    calls: list[int] = []
    encode, _ = _recording_encoder(calls)
    batcher = MicroBatcher(encode, window_s=0.02)  # type: ignore[arg-type]
    texts = [f"question {i}" for i in range(10)]
    results = await asyncio.gather(*(batcher.aencode([t]) for t in texts))
    for text, vectors in zip(texts, results, strict=True):
        assert vectors.tolist() == [[float(len(text)), float(hash(text) % 9973)]]
    batcher.close()


@pytest.mark.model
def test_the_real_model_through_the_batcher_gives_each_thread_its_vector(
    embedder: Embedder, onnx_embedder: Embedder
) -> None:
    batched = Embedder(backend="onnx", onnx_dir=onnx_embedder.onnx_dir, batch_window_ms=5)
    texts = [*SAMPLES[:6], *(f"when will card number {i} arrive" for i in range(10))]
    expected = embedder.encode(texts)
    got: dict[int, npt.NDArray[np.float32]] = {}
    start = threading.Barrier(len(texts))

    def call(i: int) -> None:
        start.wait()
        got[i] = batched.encode([texts[i]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batched.batcher is not None
    assert batched.batcher.texts == len(texts) + 0  # warm-up does not go through the batcher
    for i in range(len(texts)):
        assert float(got[i] @ expected[i]) >= 0.999, texts[i]
    batched.close()


@pytest.mark.model
def test_an_onnx_encoder_starts_as_many_threads_as_the_process_may_use(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`knowledge.cpus.usable_cpus`: a worker pinned to one CPU, or in a container allowed
    one, runs one thread; a big machine at most four."""
    from knowledge import onnx

    exported = onnx_embedder.onnx_path(), onnx_embedder.model_path
    monkeypatch.setattr(onnx, "usable_cpus", lambda: 1)
    encoder = onnx.OnnxEncoder(*exported)
    assert encoder._session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setattr(onnx, "usable_cpus", lambda: 16)
    encoder = onnx.OnnxEncoder(*exported)
    assert encoder._session.get_session_options().intra_op_num_threads == 4  # at most 4


# --- prefetching -----------------------------------------------------------------------------


def _counting(embedder: Embedder, gate: threading.Event | None = None) -> list[str]:
    """Replace the embedder's forward pass with a recording fake; the texts it ran, in order."""
    ran: list[str] = []

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if gate is not None and threading.current_thread().name.startswith("embed-prefetch"):
            gate.wait(5)
        ran.extend(texts)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    embedder._encode_small = encode  # type: ignore[method-assign]
    return ran


@pytest.mark.model
def test_a_prefetched_query_runs_the_model_once_with_the_same_vector(embedder: Embedder) -> None:
    prefetching = Embedder()
    prefetching._model = embedder.model  # the session's loaded weights
    passes: list[str] = []
    real = prefetching._encode_small

    def counted(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        passes.append(threading.current_thread().name)
        return real(texts)

    prefetching._encode_small = counted  # type: ignore[method-assign]
    prefetching.prefetch("How much is Plus?")
    vector = prefetching.encode_queries(["how much is   plus?"])  # case and spacing aside
    np.testing.assert_allclose(vector, embedder.encode(["How much is Plus?"]), atol=1e-6)
    assert len(passes) == 1 and passes[0].startswith("embed-prefetch")
    prefetching.encode_queries(["How much is Plus?"])  # taken once: asked again, embedded again
    assert len(passes) == 2
    prefetching.close()


@pytest.mark.model
def test_an_onnx_prefetch_tokenizes_in_the_caller_and_runs_only_the_pass_in_the_thread(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = onnx_embedder._onnx
    assert encoder is not None
    threads: dict[str, list[str]] = {"tokenize": [], "pass": []}
    feed, forward = encoder._feed, encoder._forward

    def fed(encodings: Any) -> Any:
        threads["tokenize"].append(threading.current_thread().name)
        return feed(encodings)

    def passed(inputs: Any) -> npt.NDArray[np.float32]:
        threads["pass"].append(threading.current_thread().name)
        return forward(inputs)

    monkeypatch.setattr(encoder, "_feed", fed)
    monkeypatch.setattr(encoder, "_forward", passed)
    expected = onnx_embedder.encode([SAMPLES[1]])
    threads["tokenize"].clear(), threads["pass"].clear()
    onnx_embedder.prefetch(SAMPLES[1])
    vector = onnx_embedder.encode_queries([SAMPLES[1]])
    np.testing.assert_array_equal(vector, expected)
    assert threads["tokenize"] == [threading.current_thread().name]
    assert len(threads["pass"]) == 1 and threads["pass"][0].startswith("embed-prefetch")


def test_a_prefetch_still_queued_is_cancelled_and_embedded_by_the_caller() -> None:
    prefetching = Embedder()
    gate = threading.Event()
    ran = _counting(prefetching, gate)
    prefetching.prefetch("first")  # the prefetch thread blocks on the gate with this one
    prefetching.prefetch("second")  # queued behind it
    assert prefetching.encode_queries(["second"])[0][0] == len("second")
    assert ran == ["second"]  # by the caller, at once; the queued prefetch never runs
    gate.set()
    assert prefetching.encode_queries(["first"])[0][0] == len("first")  # waits for the thread
    prefetching.close()
    assert ran == ["second", "first"]


def test_a_prefetch_told_to_start_returns_once_an_idle_thread_runs_its_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import knowledge.embeddings as embeddings

    monkeypatch.setattr(embeddings, "PREFETCH_START_S", 30.0)  # only a broken wait takes long
    prefetching = Embedder()
    gate = threading.Event()
    ran = _counting(prefetching, gate)
    gate.set()
    prefetching.prefetch("warm")  # the thread exists and waits for work, as in a worker
    prefetching.encode_queries(["warm"])
    gate.clear()
    prefetching.prefetch("first", start=True)
    assert prefetching._prefetched["first"].running()  # its pass has begun: no waiting on it
    asked = time.perf_counter()
    prefetching.prefetch("second", start=True)  # the thread is busy: nothing to wait for
    assert time.perf_counter() - asked < 10
    assert not prefetching._prefetched["second"].running()
    gate.set()
    assert prefetching.encode_queries(["first"])[0][0] == len("first")
    prefetching.close()
    assert ran[:2] == ["warm", "first"]


def test_pending_tells_a_vector_still_being_computed() -> None:
    prefetching = Embedder()
    gate = threading.Event()
    _counting(prefetching, gate)
    assert not prefetching.pending("first")  # nothing prefetched
    prefetching.prefetch("first")
    assert prefetching.pending("  FIRST")  # case and spacing aside, as prefetch keys it
    assert not prefetching.pending("second")
    gate.set()
    prefetching.encode_queries(["first"])
    assert not prefetching.pending("first")  # taken
    prefetching.close()


def test_at_hand_tells_a_vector_there_without_a_pass(machine: _Machine) -> None:
    embedder = Embedder(cache_size=8)
    gate = threading.Event()
    ran = _counting(embedder, gate)
    embedder.dimension = 2  # type: ignore[misc]  # the fake pass's vectors
    assert not embedder.at_hand("cached")
    embedder.encode_queries(["cached"])
    assert embedder.at_hand("  CACHED")  # case and spacing aside, as the cache keys it
    embedder.anticipate("anticipated")
    embedder.settle()
    assert embedder.at_hand("anticipated")
    embedder.prefetch("prefetched")
    assert not embedder.at_hand("prefetched")  # still being computed
    gate.set()
    deadline = time.monotonic() + 10
    while not embedder.at_hand("prefetched") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert embedder.at_hand("prefetched")
    ran.clear()
    assert not embedder.at_hand("never asked") and ran == []  # asking runs no pass
    embedder.close()


def test_close_forgets_prefetches_and_a_failed_prefetch_is_redone_by_the_caller() -> None:
    from knowledge.embeddings import PREFETCH_KEEP

    prefetching = Embedder()
    ran = _counting(prefetching)
    texts = [f"question {i}" for i in range(PREFETCH_KEEP + 3)]
    for text in texts:
        prefetching.prefetch(text)
    prefetching.close()  # waits for the thread
    ran.clear()
    prefetching.encode_queries([texts[0], texts[-1]])
    assert ran == [texts[0], texts[-1]]  # none kept after close

    failing = Embedder()

    def broken(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if threading.current_thread().name.startswith("embed-prefetch"):
            raise RuntimeError("out of memory")
        return np.ones((len(texts), 2), dtype=np.float32)

    failing._encode_small = broken  # type: ignore[method-assign]
    failing.prefetch("hello there")
    np.testing.assert_array_equal(failing.encode_queries(["hello there"]), np.ones((1, 2)))
    failing.close()


def test_unasked_prefetches_beyond_the_bound_are_forgotten() -> None:
    from knowledge.embeddings import PREFETCH_KEEP

    prefetching = Embedder()
    gate = threading.Event()
    ran = _counting(prefetching, gate)
    texts = [f"question {i}" for i in range(PREFETCH_KEEP + 2)]
    for text in texts:
        prefetching.prefetch(text)
    gate.set()
    prefetching.encode_queries([texts[-1]])  # kept: taken from the prefetch
    assert ran.count(texts[-1]) == 1
    prefetching.encode_queries([texts[1]])  # pushed out unasked (cancelled): embedded now
    assert ran.count(texts[1]) == 1
    prefetching.close()


def test_a_prefetched_vector_joins_the_cache_and_a_cached_text_is_not_prefetched() -> None:
    prefetching = Embedder(cache_size=8)
    assert prefetching.cache is not None
    ran = _counting(prefetching)
    prefetching.prefetch("How much is Plus?")
    first = prefetching.encode_queries(["How much is Plus?"])
    assert ran == ["How much is Plus?"]  # once, on the prefetch thread
    assert "how much is plus?" in prefetching.cache
    prefetching.prefetch("HOW much is Plus?")  # cached: nothing to start
    np.testing.assert_array_equal(prefetching.encode_queries(["how much is plus?"]), first)
    prefetching.close()
    assert ran == ["How much is Plus?"]
    assert prefetching.cache.hits == 1


# --- anticipating ----------------------------------------------------------------------------


class _Machine:
    """A stand-in `CpuMeter`: the machine's CPUs as idle as the test says."""

    capacity = 2.0

    def __init__(self) -> None:
        self.idle = 1.0

    def reading(self) -> tuple[float, float]:
        return time.monotonic(), 0.0

    def idle_share(self, before: tuple[float, float], after: tuple[float, float]) -> float:
        return self.idle


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> _Machine:
    """Embedders made in the test see this machine's CPUs instead of the real ones."""
    from knowledge import embeddings

    fake = _Machine()
    monkeypatch.setattr(embeddings, "CpuMeter", lambda: fake)
    return fake


def _idle_after(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Embedder:
    """An embedder that anticipates only after `seconds` without a live query."""
    from knowledge import embeddings

    monkeypatch.setattr(embeddings, "ANTICIPATE_IDLE_S", seconds)
    return Embedder()


def test_an_anticipated_text_is_embedded_once_idle_and_taken_once(machine: _Machine) -> None:
    anticipating = Embedder()
    ran = _counting(anticipating)
    anticipating.anticipate("How much is Plus? Pricing of Plus")
    anticipating.settle()
    assert ran == ["How much is Plus? Pricing of Plus"]
    assert anticipating.anticipated("how much is plus?  pricing of plus")  # as queries key it
    vector = anticipating.encode_queries(["how much is plus?  pricing of plus"])
    assert ran == ["How much is Plus? Pricing of Plus"]  # ready: no pass for the query
    assert vector[0][0] == len("How much is Plus? Pricing of Plus")
    assert not anticipating.anticipated("How much is Plus? Pricing of Plus")  # taken once
    anticipating.encode_queries(["How much is Plus? Pricing of Plus"])
    assert len(ran) == 2
    anticipating.anticipate("")  # nothing to embed
    anticipating.settle()
    assert len(ran) == 2
    anticipating.close()


def test_an_anticipation_waits_for_a_quiet_moment(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    anticipating = _idle_after(monkeypatch, 0.3)
    ran = _counting(anticipating)
    ran_at: dict[str, float] = {}
    counted = anticipating._encode_small

    def timed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        ran_at.update((t, time.monotonic()) for t in texts)
        return counted(texts)

    anticipating._encode_small = timed  # type: ignore[method-assign]
    anticipating.encode_queries(["a live question"])
    anticipating.anticipate("the context")
    time.sleep(0.1)
    anticipating.encode_queries(["another live question"])  # still busy: it waits longer
    last_live = time.monotonic()
    anticipating.settle()
    assert ran == ["a live question", "another live question", "the context"]
    assert ran_at["the context"] >= last_live + 0.25
    assert anticipating.anticipated("the context")
    anticipating.close()


def test_only_the_newest_texts_wait_and_go_first(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge import embeddings

    anticipating = _idle_after(monkeypatch, 0.3)
    ran = _counting(anticipating)
    anticipating.encode_queries(["a live question"])
    texts = [f"context {i}" for i in range(embeddings.ANTICIPATE_QUEUE + 3)]
    for text in texts:
        anticipating.anticipate(text)
    anticipating.settle()
    # The three oldest were dropped; in the quiet moment the newest go first, back to back.
    assert ran == ["a live question", *reversed(texts[3:])]
    anticipating.close()


def test_a_live_query_during_a_quiet_moment_ends_it(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    anticipating = _idle_after(monkeypatch, 0.2)
    ran: list[tuple[str, float]] = []

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        ran.extend((t, time.monotonic()) for t in texts)
        if texts == ["second"]:
            anticipating.encode_queries(["a live question"])  # arrives meanwhile
        return np.ones((len(texts), 2), dtype=np.float32)

    anticipating._encode_small = encode  # type: ignore[method-assign]
    for text in ("first", "second", "third"):
        anticipating.anticipate(text)
    anticipating.settle()
    names = [t for t, _ in ran]
    assert names == ["third", "second", "a live question", "first"]
    # "first" waited for a quiet moment of its own after the live question.
    assert ran[3][1] - ran[2][1] >= 0.15
    anticipating.close()


def test_anticipated_vectors_go_with_a_reload_a_close_or_a_failure(machine: _Machine) -> None:
    anticipating = Embedder(cache_size=8)
    assert anticipating.cache is not None
    ran = _counting(anticipating)
    anticipating.anticipate("one")
    anticipating.settle()
    anticipating.invalidate_cache()  # a knowledge base was reloaded
    assert not anticipating.anticipated("one")
    anticipating.encode_queries(["two"])  # cached now: not anticipated again
    anticipating.anticipate("two")
    anticipating.settle()
    assert ran == ["one", "two"]
    anticipating.anticipate("three")
    anticipating.settle()
    anticipating.close()
    assert not anticipating.anticipated("three")

    failing = Embedder()

    def broken(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if threading.current_thread().name.startswith("embed-anticipate"):
            raise RuntimeError("out of memory")
        return np.ones((len(texts), 2), dtype=np.float32)

    failing._encode_small = broken  # type: ignore[method-assign]
    failing.anticipate("hello there")
    failing.settle()
    assert not failing.anticipated("hello there")
    np.testing.assert_array_equal(failing.encode_queries(["hello there"]), np.ones((1, 2)))
    failing.close()


@pytest.mark.model
def test_an_anticipated_vector_is_the_one_the_query_would_compute(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_embedder._ahead, "_meter", None)  # this process's quiet alone
    text = "How much is Plus? Pricing of the Plus plan"
    expected = onnx_embedder.encode([text])
    onnx_embedder.anticipate(text)
    onnx_embedder.settle()
    assert onnx_embedder.anticipated(text)
    np.testing.assert_array_equal(onnx_embedder.encode([text]), expected)
    assert not onnx_embedder.anticipated(text)


def test_an_idle_anticipating_thread_ends_and_a_later_text_starts_another(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge import anticipation

    monkeypatch.setattr(anticipation, "LINGER_S", 0.2)
    monkeypatch.setattr(anticipation, "POLL_S", 0.05)
    anticipating = Embedder()
    ran = _counting(anticipating)
    anticipating.anticipate("one")
    anticipating.settle()
    thread = anticipating._ahead._thread
    assert thread is not None and thread.name == "embed-anticipate" and not thread.daemon
    thread.join(5)  # it lets go of the embedder once it has had nothing to do for a while
    assert not thread.is_alive() and anticipating._ahead._thread is None
    anticipating.anticipate("two")
    anticipating.settle()
    assert ran == ["one", "two"] and anticipating.anticipated("two")
    anticipating.close()


def test_an_anticipation_waits_while_the_machine_is_busy(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process is quiet, but others (other workers) keep the CPUs busy: it waits."""
    anticipating = _idle_after(monkeypatch, 0.05)
    ran = _counting(anticipating)
    machine.idle = 0.2
    anticipating.anticipate("the context")
    time.sleep(0.5)
    assert ran == [] and not anticipating.anticipated("the context")
    machine.idle = 0.9
    anticipating.settle()
    assert ran == ["the context"] and anticipating.anticipated("the context")
    anticipating.close()


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_cpu_meter_sees_other_processes_keep_the_cpus_busy() -> None:
    import multiprocessing

    from knowledge.anticipation import CpuMeter

    meter = CpuMeter()
    assert meter.capacity >= 1
    quiet = meter.reading()
    time.sleep(0.2)
    assert 0.0 <= meter.idle_share(quiet, meter.reading()) <= 1.0
    spinners = [
        multiprocessing.Process(target=_spin, args=(1.5,))
        for _ in range(max(1, round(meter.capacity)))
    ]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(0.3)  # started and spinning
        before = meter.reading()
        time.sleep(0.5)
        assert meter.idle_share(before, meter.reading()) < 0.5
    finally:
        for spinner in spinners:
            spinner.join(5)


def test_a_cgroup_cpu_limit_is_measured_against_its_quota(tmp_path: Path) -> None:
    from knowledge.anticipation import CpuMeter

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    meter = CpuMeter(tmp_path)
    assert meter.capacity == 1.5
    _, busy = meter.reading()
    assert busy == 2.5
    # 0.75 CPU-seconds busy over one second, of 1.5 CPUs: half idle.
    assert meter.idle_share((0.0, 2.5), (1.0, 3.25)) == pytest.approx(0.5)
    assert meter.idle_share((0.0, 2.5), (1.0, 5.0)) == 0.0
    assert meter.idle_share((1.0, 2.5), (1.0, 2.5)) == 0.0  # no time passed
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no limit: the CPUs themselves
    assert CpuMeter(tmp_path).capacity == len(os.sched_getaffinity(0))


def test_anticipated_vectors_not_asked_for_are_bounded(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge import embeddings

    monkeypatch.setattr(embeddings, "ANTICIPATE_KEEP", 3)
    anticipating = Embedder()
    _counting(anticipating)
    texts = [f"context {i}" for i in range(5)]
    for text in texts:
        anticipating.anticipate(text)
        anticipating.settle()
    assert [anticipating.anticipated(t) for t in texts] == [False, False, True, True, True]
    anticipating.close()


def test_a_vector_key_names_the_int8_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another int8 graph's vectors differ a little (QUANTIZE_VERSION), so a worker still on it
    # and one on this graph do not take each other's; fp32 keys do not depend on it.
    int8, fp32 = Embedder(quantize=True), Embedder()
    keys = int8.vector_key("card declined"), fp32.vector_key("card declined")
    monkeypatch.setattr(onnx, "QUANTIZE_VERSION", onnx.QUANTIZE_VERSION - 1)
    assert int8.vector_key("card declined") != keys[0]
    assert fp32.vector_key("card declined") == keys[1]


def test_an_anticipated_vector_is_passed_on_and_taken_by_another_process(
    machine: _Machine, caplog: pytest.LogCaptureFixture
) -> None:
    """`anticipate(..., keep)` hands the vector on as bytes under a key naming the text and the
    model; another embedder of the same model `offer`s it and its query runs no pass."""
    here, there = Embedder(), Embedder()
    ran_here, ran_there = _counting(here), _counting(there)
    here.dimension = there.dimension = 2  # type: ignore[misc]  # the fake pass's vectors
    kept: list[tuple[str, bytes]] = []
    text = "How much is Plus? Pricing of Plus"
    here.anticipate(text, lambda key, data: kept.append((key, data)))
    here.settle()
    assert ran_here == [text] and here.anticipated(text)  # kept here too
    ((key, data),) = kept
    assert key == here.vector_key(text) == there.vector_key("how much is plus?  pricing of plus")
    assert len(data) == 2 * 4  # little-endian float32

    assert there.offer(text, key, data)
    assert there.anticipated(text)
    np.testing.assert_array_equal(there.encode_queries([text]), [[len(text), 1.0]])
    assert ran_there == []  # no pass: the vector came from the other process

    # Refused: another text's key, another model's (int8 against fp32), a wrong length, no text.
    assert not there.offer("something else", key, data)
    assert not Embedder(quantize=True).offer(text, key, data)
    assert not there.offer(text, key, data[:-1])
    assert not there.offer("", there.vector_key(""), data)
    assert not there.anticipated("something else")

    # A failing `keep` is logged; the vector is still kept here, and later ones still go.
    def broken(key: str, data: bytes) -> None:
        raise RuntimeError("the database is down")

    with caplog.at_level(logging.WARNING, logger="knowledge.anticipation"):
        here.anticipate("another context", broken)
        here.settle()
    assert "passing on an anticipated vector failed" in caplog.text
    assert here.anticipated("another context")
    here.anticipate("a third context", lambda key, data: kept.append((key, data)))
    here.settle()
    assert len(kept) == 2
    here.close()
    there.close()


def test_a_cached_text_is_passed_on_without_a_pass(machine: _Machine) -> None:
    """A text whose vector is cached (a question, from its own turn) is not embedded again:
    anticipated alone it is nothing to do, but with `keep` the cached vector is still handed on
    in the quiet moment, for the worker that gets the conversation's next message."""
    here = Embedder(cache_size=8)
    ran = _counting(here)
    here.dimension = 2  # type: ignore[misc]  # the fake pass's vectors
    text = "How much is Plus?"
    cached = here.encode_queries([text])
    assert ran == [text]
    here.anticipate(text)
    here.settle()
    assert not here.anticipated(text)
    kept: list[tuple[str, bytes]] = []
    here.anticipate("how much is PLUS?", lambda key, data: kept.append((key, data)))
    here.settle()
    assert ran == [text]  # no second pass
    ((key, data),) = kept
    assert key == here.vector_key(text)
    np.testing.assert_array_equal(np.frombuffer(data, dtype=np.float32), cached[0])
    here.close()


def test_a_text_asked_twice_while_waiting_tells_both_and_a_forgotten_one_none(
    machine: _Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    anticipating = _idle_after(monkeypatch, 0.3)
    ran = _counting(anticipating)
    told: list[str] = []
    anticipating.encode_queries(["a live question"])  # not quiet for 0.3 s
    anticipating.anticipate("the context", lambda key, data: told.append("first"))
    anticipating.anticipate("the context", lambda key, data: told.append("second"))
    anticipating.settle()
    assert ran == ["a live question", "the context"]  # one pass
    assert told == ["first", "second"]

    anticipating.encode_queries(["another live question"])
    anticipating.anticipate("forgotten", lambda key, data: told.append("forgotten"))
    anticipating.invalidate_cache()  # a reload forgets what waits
    anticipating.settle()
    assert "forgotten" not in told
    anticipating.close()


# --- The warm-up in a thread -----------------------------------------------------------------


def _gated(embedder: Embedder, gate: threading.Event, error: Exception | None = None) -> list[str]:
    """Replace the forward pass with one that waits for `gate`, then raises `error` if given;
    the names of the threads it ran in, one per pass."""
    ran: list[str] = []

    def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        ran.append(threading.current_thread().name)
        gate.wait(5)
        if error is not None:
            raise error
        return np.ones((len(texts), 2), dtype=np.float32)

    embedder._encode_small = encode  # type: ignore[method-assign]
    return ran


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, threading.Event]:
    """Run `call` in a thread; the thread, and an event set once `call` returned or raised."""
    done = threading.Event()

    def run() -> None:
        try:
            call()
        except Exception:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def test_a_warm_up_in_a_thread_returns_at_once_and_a_later_one_waits_for_it() -> None:
    embedder, gate = Embedder(), threading.Event()
    ran = _gated(embedder, gate)
    embedder.warm_up(wait=False)  # returns while the pass is held
    embedder.warm_up(wait=False)  # already started: nothing more
    waiter, done = _in_thread(embedder.warm_up)
    assert not done.wait(0.3), "warm_up() returned before the warm-up finished"
    gate.set()
    waiter.join(5)
    assert done.is_set()
    assert ran == ["embedder-warm-up"]  # one pass, in its own thread
    embedder.warm_up()  # done: returns at once, no second pass
    assert ran == ["embedder-warm-up"]
    embedder.close()


def test_a_failed_warm_up_is_raised_to_whoever_waits_for_it() -> None:
    embedder, gate = Embedder(), threading.Event()
    gate.set()
    _gated(embedder, gate, KnowledgeError("the ONNX model could not be loaded"))
    embedder.warm_up(wait=False)
    with pytest.raises(KnowledgeError, match="could not be loaded"):
        embedder.warm_up()
    embedder.close()  # the error was the waiter's: close does not raise it again


def test_close_waits_for_a_warm_up_still_running() -> None:
    embedder, gate = Embedder(), threading.Event()
    _gated(embedder, gate)
    embedder.warm_up(wait=False)
    closer, closed = _in_thread(embedder.close)
    assert not closed.wait(0.3), "close() returned while the warm-up was still running"
    gate.set()
    closer.join(5)
    assert closed.is_set()
