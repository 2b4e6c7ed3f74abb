"""Fine-tune the retrieval model on the company's own questions, and ship it only if it wins.

`train()` runs *cycles*. Each cycle starts from the model in service (the output folder's current
version, or the base model), trains it with sentence-transformers' `SentenceTransformerTrainer`
and `MultipleNegativesRankingLoss` plus a classification of each question's entry
(`training.losses`), then evaluates it on questions kept out of training (`training.evaluate`).
The new model is *promoted*, written as the next version, only when it beats the current one
(recall@1, then MRR); otherwise it is thrown away and the next cycle starts again from the
current model with half the learning rate.

Training data:

* the knowledge base: each example question is paired with another example question of the same
  entry (a fresh draw every cycle), the entry's question with one of its examples, and the
  question with the entry's answer passage. An entry that declines gives no pairs: with the
  entry loss each of its questions is a row of its own (`decline_rows`), and with
  ``hard_negatives`` they serve as near misses. A share of every entry's examples (`holdout`) is
  kept out for the promotion check, and no held-out text is trained on anywhere.
* exported pairs JSONL (`training.export`): ``{"anchor": str, "positive": str, "negative"?: str}``,
  split by anchor so one anchor text never sits on both sides.

Batches never hold two rows of the same entry (nor the same text twice), so the in-batch
negatives of the ranking loss are real negatives.

The output folder::

    DIR/manifest.json   {"current": "v2", "base_model": ..., "versions": [...], "cycles": [...]}
    DIR/v1/, DIR/v2/    sentence-transformers model folders, each with supportbot_version.json

`knowledge.embeddings.resolve_model_path` turns DIR into DIR/<current>, so ``--model DIR`` and
``SUPPORTBOT_MODEL=DIR`` always mean the promoted model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.errors import KnowledgeError
from knowledge.base import units_of
from knowledge.embeddings import (
    MODEL_MANIFEST,
    VERSION_FILE,
    Embedder,
    default_model_path,
    resolve_model_path,
)
from knowledge.types import Entry
from training.errors import TrainingDataError
from training.evaluate import (
    Evaluation,
    HeldOutPair,
    HeldOutQuestion,
    Metrics,
    evaluate_kb,
    evaluate_pairs,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to train; the defaults suit a 2-core CPU and a few thousand questions.

    Attributes:
        cycles: train-evaluate-promote rounds.
        epochs: passes over the training pairs per cycle.
        batch_size: rows per batch; larger gives the ranking loss more negatives.
        learning_rate: peak AdamW learning rate (linear warm-up, then linear decay).
        warmup_ratio: share of a cycle's steps spent warming up.
        max_seq_length: tokens per text while training (the saved model keeps its own limit).
        holdout: share of each entry's examples (or of the pairs) kept for the promotion check.
        max_holdout: at most this many held-out knowledge-base questions in all.
        seed: fixes every random choice: splits, pairs, batches, initialisation.
        max_steps: stop a cycle after this many steps (None: run the epochs).
        hard_negatives: give every knowledge-base example a near miss as its negative: one of
            the most similar questions of *another* entry under the model being trained
            (`mine_hard_negatives`). Each batch then holds about half as many rows (two entries
            per row, none twice) and a step costs about 1.5 times as much.
        entry_loss: weight of the entry classification added to the ranking loss
            (`training.losses.EntryProxyLoss`, with the questions of entries that decline as
            rows of their own, `decline_rows`); 0 trains with the ranking loss alone.
    """

    cycles: int = 1
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 64
    holdout: float = 0.1
    max_holdout: int = 1000
    seed: int = 42
    max_steps: int | None = None
    hard_negatives: bool = False
    entry_loss: float = 1.0

    def check(self) -> None:
        """Raise `TrainingDataError` with what to change when a setting cannot work."""
        problems = []
        if self.cycles < 1:
            problems.append("--cycles must be at least 1")
        if self.epochs < 1:
            problems.append("--epochs must be at least 1")
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (the loss needs in-batch negatives)")
        if not 0 < self.learning_rate < 1:
            problems.append("--lr must be between 0 and 1 (try 2e-5 to 5e-5)")
        if not 0 < self.holdout < 0.5:
            problems.append("--holdout must be between 0 and 0.5")
        if self.max_seq_length < 8:
            problems.append("--max-seq-length must be at least 8")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("--max-steps must be at least 1")
        if self.entry_loss < 0:
            problems.append("--entry-loss must be 0 (off) or more (try 1)")
        if problems:
            raise TrainingDataError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class TrainingPair:
    """One training row: `anchor` should land nearer `positive` than anything else in its batch.

    `entry` is the id of the knowledge-base entry both texts belong to (None for exported
    pairs): the entry loss classifies them as that entry.
    """

    anchor: str
    positive: str
    negative: str | None = None
    entry: str | None = None


@dataclass(frozen=True, slots=True)
class TrainingData:
    """What one run trains and judges on, already split."""

    entries: tuple[Entry, ...]
    """The knowledge base minus its held-out examples (what the held-out questions search)."""
    questions: tuple[HeldOutQuestion, ...]
    pairs: tuple[TrainingPair, ...]
    held_out_pairs: tuple[HeldOutPair, ...]
    hashes: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_holdout(self) -> bool:
        return bool(self.questions or self.held_out_pairs)


@dataclass(frozen=True, slots=True)
class CycleResult:
    """One cycle: the current model's figures, the candidate's, and whether it was promoted."""

    cycle: int
    before: Evaluation
    after: Evaluation
    promoted: bool
    version: str | None
    learning_rate: float
    steps: int
    train_rows: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "promoted": self.promoted,
            "version": self.version,
            "learning_rate": self.learning_rate,
            "steps": self.steps,
            "train_rows": self.train_rows,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True, slots=True)
class TrainReport:
    """What `train()` did; `model_path` is the model in service afterwards."""

    out: Path
    cycles: tuple[CycleResult, ...]
    current: str | None
    model_path: Path
    seconds: float

    @property
    def promoted(self) -> tuple[str, ...]:
        return tuple(c.version for c in self.cycles if c.version)


# -- data ---------------------------------------------------------------------------------------


def load_pairs(path: Path | str) -> list[TrainingPair]:
    """Read an exported pairs JSONL file; a malformed line names its line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"cannot read training pairs: {e}", path) from e
    pairs: list[TrainingPair] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise TrainingDataError(f"{where}: not valid JSON ({e.msg})", path) from e
        if not isinstance(data, dict):
            raise TrainingDataError(f"{where}: each line must be a JSON object", path)
        anchor, positive, negative = data.get("anchor"), data.get("positive"), data.get("negative")
        if not isinstance(anchor, str) or not anchor.strip():
            raise TrainingDataError(f'{where}: "anchor" must be a non-empty string', path)
        if not isinstance(positive, str) or not positive.strip():
            raise TrainingDataError(f'{where}: "positive" must be a non-empty string', path)
        if negative is not None and not isinstance(negative, str):
            raise TrainingDataError(f'{where}: "negative" must be a string or absent', path)
        pairs.append(
            TrainingPair(_norm(anchor), _norm(positive), _norm(negative) if negative else None)
        )
    if not pairs:
        raise TrainingDataError("no training pairs in file", path)
    return pairs


def _norm(text: str) -> str:
    return " ".join(text.split())


def _key(text: str) -> str:
    return _norm(text).casefold()


def _stable_fraction(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by the text and the seed: the same text always falls alike."""
    digest = hashlib.sha256(f"{seed}\x1f{_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_kb(
    entries: Sequence[Entry], holdout: float, seed: int, max_holdout: int = 1000
) -> tuple[list[Entry], list[HeldOutQuestion]]:
    """Keep a share of each entry's examples out of training.

    Only entries with at least three examples lend any (two stay to train on), and no entry
    that declines (it is trained on as negatives only). Held-out texts are removed from every
    entry, so no query text is on both sides.
    """
    rng = random.Random(seed)
    eligible = sum(max(0, len(e.examples) - 2) for e in entries if not e.declines)
    rate = min(holdout, max_holdout / eligible) if eligible else 0.0
    questions: list[HeldOutQuestion] = []
    for entry in entries:
        if len(entry.examples) < 3 or entry.declines:
            continue
        wanted = min(len(entry.examples) - 2, max(1, round(rate * len(entry.examples))))
        for text in rng.sample(list(entry.examples), wanted):
            questions.append(HeldOutQuestion(_norm(text), entry.id))
    held = {_key(q.text) for q in questions}
    kept = [
        replace(e, examples=tuple(x for x in e.examples if _key(x) not in held)) for e in entries
    ]
    return kept, questions


def split_pairs(
    pairs: Sequence[TrainingPair], holdout: float, seed: int
) -> tuple[list[TrainingPair], list[HeldOutPair]]:
    """Hold out pairs by anchor text; training rows that mention a held-out anchor are dropped."""
    held = [p for p in pairs if _stable_fraction(p.anchor, seed) < holdout]
    if not held and len(pairs) >= 2:
        held = [min(pairs, key=lambda p: _stable_fraction(p.anchor, seed))]
    held_anchors = {_key(p.anchor) for p in held}
    train = [
        p
        for p in pairs
        if _key(p.anchor) not in held_anchors and _key(p.positive) not in held_anchors
    ]
    return train, [HeldOutPair(p.anchor, p.positive, p.negative) for p in held]


def kb_pairs(entries: Sequence[Entry], seed: int) -> list[TrainingPair]:
    """Training pairs from the knowledge base's own wording (see the module doc)."""
    rng = random.Random(seed)
    pairs: list[TrainingPair] = []
    for entry in entries:
        if entry.declines:
            continue  # its questions share no topic; they serve as negatives only
        units = units_of(entry)
        questions = [t for kind, t in units if kind in ("question", "example")]
        passage = next((t for kind, t in units if kind == "passage"), None)
        examples = [t for kind, t in units if kind == "example"]
        for example in examples:
            others = [t for t in questions if t != example]
            if others:
                pairs.append(TrainingPair(example, rng.choice(others), entry=entry.id))
            elif passage:
                pairs.append(TrainingPair(example, passage, entry=entry.id))
        if entry.question and examples:
            pairs.append(TrainingPair(_norm(entry.question), rng.choice(examples), entry=entry.id))
        lead = _norm(entry.question) if entry.question else (examples[0] if examples else None)
        if lead and passage and lead != passage:
            pairs.append(TrainingPair(lead, passage, entry=entry.id))
    return pairs


#: Candidates closer than this to the anchor are left out of the near misses: at that similarity
#: two questions of different entries are nearly always the same question filed twice, and
#: pushing them apart teaches the model the labelling noise.
NEGATIVE_CEILING = 0.9


def mine_hard_negatives(
    embedder: Embedder,
    entries: Sequence[Entry],
    seed: int,
    *,
    pool: int = 3,
    ceiling: float = NEGATIVE_CEILING,
    chunk: int = 1024,
) -> dict[str, str]:
    """A near miss for each question of the knowledge base, keyed by its `_key`.

    Every question (entry question or example) is embedded with `embedder`; its negative is drawn
    from the `pool` most similar questions of *other* entries below `ceiling`. Rows whose near
    miss is what ranks first today are the ones the ranking loss most needs to see.
    """
    texts: list[str] = []
    owners: list[int] = []
    for number, entry in enumerate(entries):
        for kind, text in units_of(entry):
            if kind in ("question", "example"):
                texts.append(text)
                owners.append(number)
    if len(set(owners)) < 2:
        return {}
    vectors = embedder.encode(texts, progress=True)
    owner = np.asarray(owners)
    rng = random.Random(seed)
    negatives: dict[str, str] = {}
    for begin in range(0, len(texts), chunk):
        rows = slice(begin, begin + chunk)
        similarity = vectors[rows] @ vectors.T
        similarity[owner[rows, None] == owner[None, :]] = -np.inf
        similarity[similarity >= ceiling] = -np.inf
        depth = min(pool, similarity.shape[1] - 1)
        nearest = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]
        for offset, candidates in enumerate(nearest.tolist()):
            usable = [c for c in candidates if np.isfinite(similarity[offset, c])]
            if usable:
                negatives[_key(texts[begin + offset])] = texts[rng.choice(usable)]
    return negatives


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(child.read_bytes())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_data(
    kb_paths: Sequence[Path | str] = (),
    pair_files: Sequence[Path | str] = (),
    *,
    config: TrainConfig = TrainConfig(),
) -> TrainingData:
    """Load and split the knowledge base and the pairs files."""
    from knowledge.ingest import load_sources

    if not kb_paths and not pair_files:
        raise TrainingDataError("nothing to train on: give --kb and/or --pairs")
    entries = load_sources(list(kb_paths)) if kb_paths else []
    kept, questions = split_kb(entries, config.holdout, config.seed, config.max_holdout)
    raw_pairs = [pair for path in pair_files for pair in load_pairs(path)]
    train_pairs, held_pairs = split_pairs(raw_pairs, config.holdout, config.seed)
    # A held-out knowledge-base question must not be trained on through the pairs either.
    held = {_key(q.text) for q in questions} | {_key(p.anchor) for p in held_pairs}
    train_pairs = [
        p for p in train_pairs if _key(p.anchor) not in held and _key(p.positive) not in held
    ]
    hashes = {str(p): _hash_file(Path(p)) for p in [*kb_paths, *pair_files]}
    data = TrainingData(
        tuple(kept), tuple(questions), tuple(train_pairs), tuple(held_pairs), hashes
    )
    if not data.has_holdout:
        raise TrainingDataError(
            "too little data to hold any out for the promotion check: give entries with at "
            "least three example questions each, or a pairs file with two or more pairs"
        )
    return data


# -- batching -----------------------------------------------------------------------------------


def distinct_batches(
    keys: Sequence[frozenset[str]],
    batch_size: int,
    seed: int,
    *,
    lengths: Sequence[int] | None = None,
    window: int = 32,
    drop_last: bool = False,
) -> list[list[int]]:
    """Shuffle rows into batches in which no key (entry or text) appears twice.

    With `lengths`, rows are sorted by length inside windows of `window` batches before the
    batches are filled, and the batches are shuffled afterwards: a batch pads its texts to its
    longest one, so batches of alike lengths cost a fraction of the compute on a CPU.
    """
    rng = random.Random(seed)
    order = list(range(len(keys)))
    rng.shuffle(order)
    span = batch_size * window if lengths is not None else max(len(order), 1)
    batches: list[list[int]] = []
    carry: list[int] = []
    for begin in range(0, len(order), span):
        last = begin + span >= len(order)
        pending = carry + order[begin : begin + span]
        carry = []
        if lengths is not None:
            pending.sort(key=lambda row: lengths[row])
        while pending:
            batch: list[int] = []
            used: set[str] = set()
            deferred: list[int] = []
            for row in pending:
                if len(batch) < batch_size and used.isdisjoint(keys[row]):
                    batch.append(row)
                    used |= keys[row]
                else:
                    deferred.append(row)
            if len(batch) == batch_size:
                batches.append(batch)
            elif not last:
                carry += batch  # a short batch: its rows try again in the next window
            elif not drop_last:
                batches.append(batch)
            pending = deferred
    if lengths is not None:
        rng.shuffle(batches)
    return batches


def _batch_sampler_factory(group_of: Mapping[str, str]) -> Callable[..., Any]:
    """A `batch_sampler` for the trainer: rows keyed by their texts' entries (or the texts)."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class DistinctBatchSampler(DefaultBatchSampler):
        def __init__(self, dataset: Any, **kwargs: Any) -> None:
            super().__init__(dataset, **kwargs)
            columns = [c for c in ("anchor", "positive", "negative") if c in dataset.column_names]
            rows = list(zip(*(list(dataset[c]) for c in columns), strict=True))
            self.keys = [frozenset(group_of.get(_key(t), _key(t)) for t in row) for row in rows]
            self.lengths = [max(len(t) for t in row) for row in rows]
            self._cache: tuple[int, list[list[int]]] | None = None

        def _batches(self) -> list[list[int]]:
            if self._cache is None or self._cache[0] != self.epoch:
                batches = distinct_batches(
                    self.keys,
                    self.batch_size,
                    self.seed + self.epoch,
                    lengths=self.lengths,
                    drop_last=self.drop_last,
                )
                self._cache = (self.epoch, batches)
            return self._cache[1]

        def __iter__(self) -> Iterator[list[int]]:
            yield from self._batches()

        def __len__(self) -> int:
            return len(self._batches())

    def make(dataset: Any, **kwargs: Any) -> Any:
        return DistinctBatchSampler(dataset, **kwargs)

    return make


# -- the versioned output folder ----------------------------------------------------------------


class ModelRegistry:
    """The output folder: promoted versions and a manifest naming the current one.

    Args:
        root: the folder (created on the first promotion).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MODEL_MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": MANIFEST_FORMAT, "current": None, "versions": [], "cycles": []}
        try:
            data: dict[str, Any] = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise KnowledgeError(
                f"{self.manifest_path} is unreadable ({e}); fix it or train into a new folder"
            ) from e
        return data

    @property
    def current(self) -> str | None:
        value = self.manifest().get("current")
        return str(value) if value else None

    def current_path(self) -> Path | None:
        return resolve_model_path(self.root) if self.current else None

    def next_version(self) -> str:
        taken = [v["version"] for v in self.manifest().get("versions", [])]
        numbers = [int(v[1:]) for v in taken if v[1:].isdigit()]
        n = max(numbers, default=0) + 1
        while (self.root / f"v{n}").exists():
            n += 1
        return f"v{n}"

    def promote(self, candidate: Path, record: Mapping[str, Any]) -> str:
        """Move a trained model folder in as the next version and make it current."""
        version = self.next_version()
        self.root.mkdir(parents=True, exist_ok=True)
        full = {"version": version, **record}
        (candidate / VERSION_FILE).write_text(json.dumps(full, indent=2))
        shutil.move(str(candidate), self.root / version)
        manifest = self.manifest()
        manifest["current"] = version
        manifest.setdefault("base_model", record.get("base_model"))
        manifest.setdefault("versions", []).append(full)
        self._write(manifest)
        return version

    def record_cycle(self, result: CycleResult) -> None:
        manifest = self.manifest()
        manifest.setdefault("cycles", []).append(
            {**result.to_json(), "at": datetime.now(UTC).isoformat(timespec="seconds")}
        )
        self._write(manifest)

    def _write(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_name(f".{MODEL_MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(self.manifest_path)


# -- training -----------------------------------------------------------------------------------


def evaluate_model(embedder: Embedder, data: TrainingData) -> Evaluation:
    """The promotion figures of one model on the held-out data."""
    kb = evaluate_kb(embedder, data.entries, data.questions) if data.questions else None
    pairs = evaluate_pairs(embedder, data.held_out_pairs) if data.held_out_pairs else None
    overall = Metrics.mean([m for m in (kb, pairs) if m is not None])
    return Evaluation(overall, kb, pairs)


def decline_rows(entries: Sequence[Entry]) -> list[TrainingPair]:
    """Rows for the questions of entries that decline, for training with the entry loss.

    Each such question is its own positive: the two encodings differ by dropout, as in SimCSE,
    so the ranking loss mostly pushes it away from the batch's other rows, while the entry loss
    (its row is labelled with the declining entry) pulls it to that entry's proxy. What
    customers must not get an answer to is learned as a region of its own, apart from the
    entries they resemble. Without the entry loss these questions would only be pushed apart,
    from each other too, so they stay out of training there (`kb_pairs`).
    """
    return [
        TrainingPair(text, text, entry=entry.id)
        for entry in entries
        if entry.declines
        for kind, text in units_of(entry)
        if kind in ("question", "example")
    ]


def _rows(
    data: TrainingData,
    seed: int,
    negatives: Mapping[str, str] | None = None,
    *,
    declines: bool = False,
) -> dict[str, list[TrainingPair]]:
    """The cycle's training rows, grouped by column layout (with or without a negative).

    `negatives` (`mine_hard_negatives`) gives the knowledge base's rows their near misses;
    `declines` adds the questions of entries that decline (`decline_rows`).
    """
    rows = kb_pairs(data.entries, seed)
    if negatives:
        rows = [
            replace(p, negative=negatives[_key(p.anchor)]) if _key(p.anchor) in negatives else p
            for p in rows
        ]
    if declines:
        rows += decline_rows(data.entries)
    rows += list(data.pairs)
    return {
        "pairs": [p for p in rows if p.negative is None],
        "triplets": [p for p in rows if p.negative is not None],
    }


def _dataset(rows: Sequence[TrainingPair], labels: Mapping[str, int] | None = None) -> Any:
    """The rows as a `datasets.Dataset`; with `labels` (index by entry id), a ``label`` column
    gives each row its entry's index (`NO_ENTRY` for none)."""
    from datasets import Dataset

    from training.losses import NO_ENTRY

    columns: dict[str, list[Any]] = {
        "anchor": [r.anchor for r in rows],
        "positive": [r.positive for r in rows],
    }
    if rows and rows[0].negative is not None:
        columns["negative"] = [r.negative or "" for r in rows]
    if labels is not None:
        columns["label"] = [
            NO_ENTRY if r.entry is None else labels.get(r.entry, NO_ENTRY) for r in rows
        ]
    return Dataset.from_dict(columns)


def _entry_proxies(model: SentenceTransformer, entries: Sequence[Entry], *, progress: bool) -> Any:
    """Each entry's starting proxy, in the entries' order: the normalised mean of its texts
    under `model` (`training.losses.EntryProxyLoss`)."""
    import torch

    texts = [(index, text) for index, e in enumerate(entries) for _, text in units_of(e)]
    vectors = model.encode(
        [text for _, text in texts],
        batch_size=64,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=progress,
    )
    owners = torch.tensor([index for index, _ in texts])
    sums = torch.zeros(len(entries), vectors.shape[1]).index_add_(0, owners, vectors.cpu())
    return torch.nn.functional.normalize(sums, dim=-1)


def _load_model(path: Path) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def uses_entry_loss(config: TrainConfig, data: TrainingData) -> bool:
    """Whether a cycle adds the entry loss: pairs alone (no knowledge base) name no entries and
    only rank."""
    return config.entry_loss > 0 and any(not e.declines for e in data.entries)


def train_cycle(
    model_path: Path,
    data: TrainingData,
    out: Path,
    *,
    config: TrainConfig,
    learning_rate: float,
    seed: int,
    progress: bool = True,
) -> tuple[int, int]:
    """Train a copy of the model at `model_path` and save it to `out`; returns (steps, rows)."""
    import transformers
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from training.losses import EntryProxyLoss

    transformers.set_seed(seed)
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    model = _load_model(model_path)
    saved_length = model.max_seq_length
    model.max_seq_length = min(config.max_seq_length, saved_length or config.max_seq_length)
    # Rows are batched by entry; an entry that declines has no rows of its own, and its texts
    # are negatives only, so each stands alone and many rows can draw one per batch.
    groups = {_key(t): e.id for e in data.entries if not e.declines for _, t in units_of(e)}
    negatives = None
    if config.hard_negatives:
        negatives = mine_hard_negatives(Embedder(model_path), data.entries, seed)
    by_entry = uses_entry_loss(config, data)
    rows_by_layout = _rows(data, seed, negatives, declines=by_entry)
    layouts = {name: rows for name, rows in rows_by_layout.items() if rows}
    if not layouts:
        raise TrainingDataError("no training pairs left after holding out the evaluation split")
    loss: Any
    labels = None
    if by_entry:
        labels = {entry.id: index for index, entry in enumerate(data.entries)}
        proxies = _entry_proxies(model, data.entries, progress=progress)
        loss = EntryProxyLoss(model, proxies, weight=config.entry_loss)
    else:
        loss = MultipleNegativesRankingLoss(model)
    datasets = {name: _dataset(rows, labels) for name, rows in layouts.items()}
    train_rows = sum(len(rows) for rows in layouts.values())
    batch_size = config.batch_size
    if negatives:
        # A row with a negative spans two entries and no entry may appear twice in a batch.
        batch_size = max(2, min(batch_size, len({e.id for e in data.entries}) // 2))
    with tempfile.TemporaryDirectory(prefix="supportbot-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps or -1,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
            weight_decay=0.01,
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=not progress,
            dataloader_num_workers=0,
            batch_sampler=_batch_sampler_factory(groups),
            multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=datasets if len(datasets) > 1 else next(iter(datasets.values())),
            loss=loss,
        )
        state = trainer.train()
    # Texts were cut short to train fast; in service the model keeps its own limit.
    model.max_seq_length = saved_length
    model.save(str(out), create_model_card=False)
    return int(state.global_step), train_rows


def train(
    kb_paths: Sequence[Path | str] = (),
    pair_files: Sequence[Path | str] = (),
    out: Path | str = "models",
    *,
    config: TrainConfig = TrainConfig(),
    base: Path | str | None = None,
    on_cycle: Callable[[CycleResult], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    evaluate: Callable[[Embedder, TrainingData], Evaluation] = evaluate_model,
    progress: bool = True,
) -> TrainReport:
    """Fine-tune in cycles, promoting only models that beat the one in service.

    Args:
        kb_paths: knowledge-base files or folders whose example questions to train on.
        pair_files: exported pairs JSONL files.
        out: the versioned output folder; an existing one continues from its current version.
        config: training settings.
        base: the model to start from when `out` has no current version yet (default: the
            bundled all-MiniLM-L6-v2). With a current version in `out`, training continues
            from that one unless `base` is given.
        on_cycle: called after every cycle (the CLI prints its table there).
        on_status: called with short progress notes ("evaluating the current model", ...).
        evaluate: how a model is judged (tests inject their own).
        progress: show the trainer's progress bar.
    """
    config.check()
    started = time.perf_counter()
    say = on_status or (lambda message: logger.info("%s", message))
    registry = ModelRegistry(out)
    current_path = (
        resolve_model_path(Path(base)) if base else registry.current_path() or default_model_path()
    )
    data = prepare_data(kb_paths, pair_files, config=config)
    say(
        f"{len(data.entries)} entries, {len(data.questions)} held-out questions, "
        f"{len(data.pairs)} training pairs, {len(data.held_out_pairs)} held-out pairs"
    )
    say(f"evaluating the current model ({current_path})")
    current_eval = evaluate(Embedder(current_path), data)
    learning_rate = config.learning_rate
    results: list[CycleResult] = []
    base_record = str(base or registry.manifest().get("base_model") or default_model_path())
    # The split stays fixed by `config.seed`; each cycle, in this run or a later one into the
    # same folder, draws its own pairs and batches.
    done = len(registry.manifest().get("cycles", []))
    for cycle in range(1, config.cycles + 1):
        cycle_started = time.perf_counter()
        seed = config.seed + done + cycle - 1
        registry.root.mkdir(parents=True, exist_ok=True)
        candidate = Path(tempfile.mkdtemp(prefix=".candidate-", dir=registry.root))
        try:
            losses = "ranking + entry loss" if uses_entry_loss(config, data) else "ranking loss"
            say(
                f"cycle {cycle}/{config.cycles}: training ({losses}, "
                f"learning rate {learning_rate:g})"
            )
            steps, rows = train_cycle(
                current_path,
                data,
                candidate,
                config=config,
                learning_rate=learning_rate,
                seed=seed,
                progress=progress,
            )
            say(f"cycle {cycle}/{config.cycles}: evaluating the new model")
            # A fresh version file gives the candidate its own fingerprint before it is used.
            (candidate / VERSION_FILE).write_text(json.dumps({"candidate": cycle, "seed": seed}))
            candidate_eval = evaluate(Embedder(candidate), data)
            promoted = candidate_eval.overall.beats(current_eval.overall)
            version = None
            if promoted:
                version = registry.promote(
                    candidate,
                    {
                        "parent": str(current_path),
                        "base_model": base_record,
                        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "metrics": candidate_eval.to_json(),
                        "previous_metrics": current_eval.to_json(),
                        "data": dict(data.hashes),
                        "config": {**asdict(config), "learning_rate": learning_rate},
                        "cycle": cycle,
                        "steps": steps,
                    },
                )
        finally:
            if candidate.exists():
                shutil.rmtree(candidate, ignore_errors=True)
        result = CycleResult(
            cycle=cycle,
            before=current_eval,
            after=candidate_eval,
            promoted=promoted,
            version=version,
            learning_rate=learning_rate,
            steps=steps,
            train_rows=rows,
            seconds=time.perf_counter() - cycle_started,
        )
        results.append(result)
        registry.record_cycle(result)
        if on_cycle:
            on_cycle(result)
        if promoted:
            current_eval = candidate_eval
            current_path = registry.root / str(version)
        else:
            learning_rate /= 2
    return TrainReport(
        out=registry.root,
        cycles=tuple(results),
        current=registry.current,
        model_path=current_path,
        seconds=time.perf_counter() - started,
    )
