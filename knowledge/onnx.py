"""Query embedding with ONNX Runtime: the same all-MiniLM-L6-v2, exported once, run without torch.

`export()` traces the sentence-transformers model (transformer, mean pooling, L2 normalisation)
into one ONNX graph with `torch.onnx.export`; `OnnxEncoder` runs it with ONNX Runtime and the
model's own fast tokenizer (`tokenizer.json`). The exported file is cached (see
`knowledge.embeddings.Embedder`), so only the first start pays for the export and later starts
never import torch at all. `quantize()` writes an int8 (dynamic) variant.

`onnxruntime` is optional: `available()` says whether it can be used; the embedder falls back to
torch when it cannot.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from bot.errors import KnowledgeError
from knowledge.cpus import usable_cpus

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17
#: Part of a cached export's file name (`Embedder.onnx_path`); raised whenever `export` writes a
#: different graph, so a data folder's earlier export is not reused. 2: fused attention.
EXPORT_VERSION = 2
#: Part of a cached int8 model's file name, raised whenever `quantize` writes a different
#: graph. 2: quantized from the fused graph (before: from the plain one).
QUANTIZE_VERSION = 2
#: How far the fused graph's vectors may be from the plain graph's (they are ~2e-7 apart).
FUSED_TOLERANCE = 1e-4


def available() -> bool:
    """True when ONNX Runtime is installed (exporting also needs the `onnx` package)."""
    return importlib.util.find_spec("onnxruntime") is not None


def check_exportable(model_path: Path) -> int:
    """The model's maximum sequence length, if it is a plain mean-pooled, normalised model.

    Raises:
        KnowledgeError: the model uses another pooling or extra modules the export does not cover.
    """
    modules_file = model_path / "modules.json"
    if modules_file.exists():
        kinds = [m.get("type", "") for m in json.loads(modules_file.read_text())]
        allowed = ("Transformer", "Pooling", "Normalize")
        if any(not k.endswith(allowed) for k in kinds):
            raise KnowledgeError(
                f"{model_path} has modules the ONNX export does not cover ({kinds}); "
                "set SUPPORTBOT_EMBED_BACKEND=torch"
            )
    pooling = model_path / "1_Pooling" / "config.json"
    if pooling.exists():
        config = json.loads(pooling.read_text())
        modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise KnowledgeError(
                f"{model_path} pools with {modes}; the ONNX export supports mean pooling only: "
                "set SUPPORTBOT_EMBED_BACKEND=torch"
            )
    bert_config = model_path / "sentence_bert_config.json"
    if bert_config.exists():
        return int(json.loads(bert_config.read_text()).get("max_seq_length") or 256)
    return 256


def export(model_path: Path, out: Path, *, fuse: bool = True) -> Path:
    """Export the model to `out` (written atomically); returns `out`.

    The attention is traced as its plain operations (``attn_implementation="eager"``), which
    ONNX Runtime's transformer optimizer recognises; with `fuse`, a BERT model's graph is
    then fused (`_fuse`). `quantize` takes the plain graph (``fuse=False``).

    Raises:
        KnowledgeError: the model cannot be exported (see `check_exportable`), or `onnx` is
            missing.
    """
    check_exportable(model_path)
    if importlib.util.find_spec("onnx") is None:
        raise KnowledgeError("exporting to ONNX needs the `onnx` package: run `pip install onnx`")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    logger.info("exporting %s to ONNX at %s (once)", model_path, out)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformer = AutoModel.from_pretrained(
        str(model_path), local_files_only=True, attn_implementation="eager"
    ).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: Any, attention_mask: Any, token_type_ids: Any
        ) -> Any:  # pragma: no cover - traced, not called
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    sample = torch.ones((2, 8), dtype=torch.int64)
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
    axes["embedding"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        # The tracer warns about shape checks it freezes (padding, causal masks): they hold
        # for every input of an encoder, and the equivalence tests compare with the torch model.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled(transformer),
                (sample, sample, torch.zeros_like(sample)),
                str(tmp),
                input_names=list(INPUTS),
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        if fuse:
            try:
                _fuse(tmp, model_path)
            except Exception as e:  # the plain graph embeds the same, only slower
                logger.warning(
                    "ONNX export of %s: fusing failed (%s); kept the plain graph", model_path, e
                )
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written export is never left behind
        raise
    return out


def _fuse(path: Path, model_path: Path) -> bool:
    """Fuse a BERT export in place with ONNX Runtime's transformer optimizer: each layer's
    attention becomes one operator, and the embeddings' and layer norms' steps theirs.

    One question is the service's commonest forward pass, and there the plain graph's 530
    small operators cost more than their arithmetic: fused, one question takes 12% less time
    (fp32, 2 cores, paired: 4.85 → 4.25 ms), while passes of 16 and 64 take about the same
    (docs/benchmarks.md, "Eighth round"). The fused graph is kept only if it fused the
    attention and embeds the samples as the plain one does (within `FUSED_TOLERANCE`).

    Returns:
        whether `path` now holds the fused graph.
    """
    config_file = model_path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    if config.get("model_type") != "bert":
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
    )
    if not model.get_fused_operator_statistics().get("Attention"):
        logger.info("ONNX export of %s: no attention to fuse; kept as exported", model_path)
        return False
    fused = path.with_name(f"{path.name}.fused")
    try:
        model.save_model_to_file(str(fused))
        samples = ["How do I reset my password?", "x", "my card payment was declined " * 6]
        plain, candidate = OnnxEncoder(path, model_path), OnnxEncoder(fused, model_path)
        apart = max(
            float(np.abs(plain.encode(batch) - candidate.encode(batch)).max())
            for batch in [samples, samples[:1], samples[1:2]]
        )
        if apart > FUSED_TOLERANCE:
            logger.warning(
                "ONNX export of %s: the fused graph's vectors are %.1e from the plain graph's; "
                "kept the plain graph",
                model_path,
                apart,
            )
            return False
        fused.replace(path)
        return True
    finally:
        fused.unlink(missing_ok=True)


def quantize(source: Path, out: Path) -> Path:
    """Write an int8 dynamically quantized copy of an exported model to `out`.

    `source` is the fused export (`export`): each layer's `Attention` becomes one
    `QAttention`, and the embeddings' `EmbedLayerNormalization` a `QEmbedLayerNormalization`
    (int8 word embeddings, a quarter of their 47 MB). One question embeds 3–5% faster than
    with the plain graph quantized, as before, and two at once 8–9% (paired), at the same
    BANKING77 quality (docs/benchmarks.md, "Eighteenth round"; `bench/int8_graphs.py`).
    """
    import onnx as onnx_format
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def advice(record: logging.LogRecord) -> bool:
        # ONNX Runtime suggests its pre-processing step on the root logger for every model.
        return not record.getMessage().startswith("Please consider to run pre-processing")

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            # The fused operators are ONNX Runtime's own, which ONNX's shape inference does not
            # know: the tensors they write are float, as in the plain graph.
            extra_options={"DefaultTensorType": onnx_format.TensorProto.FLOAT},
        )
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written model is never left behind
        raise
    finally:
        root.removeFilter(advice)
    return out


R = TypeVar("R")
#: `OnnxEncoder.map_passes`' work: (the pass's positions in the texts, their vectors, the
#: seconds the pass took) → anything.
PassWork = Callable[[Sequence[int], Vectors, float], R]


def _session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session over `path` with `threads` intra-op threads, which do not
    spin between calls, so they do not steal time from the rest of the process."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Runs an exported model: texts in, L2-normalised float32 vectors out.

    Args:
        onnx_path: the file `export()` (or `quantize()`) wrote.
        model_path: the sentence-transformers directory (for its `tokenizer.json`).
        max_length: tokens kept per text (the model's `max_seq_length`).
        threads: ONNX Runtime intra-op threads (0: the CPUs this process may use, at most 4,
            `knowledge.cpus.usable_cpus`); threads do not spin between calls, so they do not
            steal time from the rest of the process.
        lanes: the forward passes of one `map_passes` run this many at a time, each from its
            own thread, on the one session.
        single_threads: passes of one text (a live question) run on a second session with
            this many threads; None: on the one session. For the int8 model on two cores, one
            thread embeds a question as fast as two (2.09 against 2.07 ms) and leaves the other
            core to the turn's database work, which runs meanwhile (`Embedder.prefetch`):
            paired whole turns 5.81 → 5.37 ms. The second session costs 38 MB for int8 (and
            would cost 96 MB for fp32, where one thread is slower: 5.1 against 4.2 ms).
    """

    def __init__(
        self,
        onnx_path: Path,
        model_path: Path,
        *,
        max_length: int = 256,
        threads: int = 0,
        lanes: int = 1,
        single_threads: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        tokenizer_file = model_path / "tokenizer.json"
        if not tokenizer_file.exists():
            raise KnowledgeError(
                f"{model_path} has no tokenizer.json (a fast tokenizer is needed for ONNX); "
                "set SUPPORTBOT_EMBED_BACKEND=torch"
            )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()
        threads = threads or min(usable_cpus(), 4)
        self._session = _session(onnx_path, threads)
        self._single = (
            self._session
            if single_threads in (None, threads)
            else _session(onnx_path, single_threads)
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.path = onnx_path
        self.lanes = max(1, lanes)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the lanes' threads, if any were started."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One forward pass over all texts (padded to the longest)."""
        return self._run(self._tokenizer.encode_batch(list(texts)))

    def prepare(self, texts: Sequence[str]) -> Callable[[], Vectors]:
        """Tokenize now; the returned call runs the forward pass (`encode` in two steps).

        For a background thread: only the pass, which releases the GIL, is left to it, so a
        thread busy with Python code (a turn's database work) does not hold it up.
        """
        feed = self._feed(self._tokenizer.encode_batch(list(texts)))
        return functools.partial(self._forward, feed)

    def encode_many(self, texts: Sequence[str], batch: int) -> Vectors:
        """Many texts in passes of `batch`, grouped by their number of tokens (`map_passes`)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        parts = self.map_passes(texts, batch, lambda positions, vectors, seconds: vectors, lanes=1)
        out = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        for positions, vectors in parts:
            out[positions] = vectors
        return out

    def map_passes(
        self, texts: Sequence[str], batch: int, work: PassWork[R], *, lanes: int | None = None
    ) -> list[tuple[Sequence[int], R]]:
        """Embed texts in passes of `batch` and hand each pass's vectors to `work` at once.

        The texts are tokenized once, together, and sorted by token count, so each pass pads
        almost nothing; sorting by characters, as before, left enough padding to cost about a
        fifth of the model's rate (BANKING77 test questions, int8: 850 → 1,091 texts/s over
        2,048 in passes of 64; docs/benchmarks.md, "Fourth round").

        With `lanes` (default: the encoder's; at most the encoder's) above 1 the passes run
        that many at a time, each lane a thread that takes the next pass when its own is done,
        then runs `work` on it. Small passes gain: on two cores a pass of 16 int8 texts keeps
        ONNX Runtime's two threads only partly busy, and two lanes of them embed about a fifth
        faster than one (2,100 against 1,714 texts/s), while `work` of one lane (the
        retriever's search of a batch of messages) runs as the other lane embeds. Passes of 64
        do not gain (int8 1,869 against 1,829 texts/s; fp32 887 against 958), so `encode_many`
        keeps one lane (docs/benchmarks.md, "Fifth round: passes in lanes"; `bench/lanes.py`).

        Returns:
            one (positions in `texts`, `work`'s result) per pass, shortest texts first.
        """
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        passes = [order[start : start + batch].tolist() for start in range(0, len(order), batch)]

        def one(positions: list[int]) -> tuple[Sequence[int], R]:
            started = time.perf_counter()
            vectors = self._run([encodings[i] for i in positions])
            return positions, work(positions, vectors, time.perf_counter() - started)

        if (lanes or self.lanes) == 1 or len(passes) < 2:
            return [one(positions) for positions in passes]
        return list(self._lanes().map(one, passes))

    def _lanes(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="onnx-lane")
            return self._pool

    def _run(self, encodings: Sequence[Any]) -> Vectors:
        """One forward pass over tokenized texts, padded to the longest."""
        return self._forward(self._feed(encodings))

    def _feed(self, encodings: Sequence[Any]) -> dict[str, npt.NDArray[np.int64]]:
        """The model's inputs for tokenized texts, padded to the longest."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feed.items() if k in self._inputs}

    def _forward(self, feed: dict[str, npt.NDArray[np.int64]]) -> Vectors:
        session = self._single if len(feed["input_ids"]) == 1 else self._session
        output = session.run(None, feed)
        return np.ascontiguousarray(output[0], dtype=np.float32)
