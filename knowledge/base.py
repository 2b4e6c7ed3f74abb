"""The knowledge base on disk: entries, their retrieval units, vectors and both indexes.

Layout of the index directory::

    manifest.json     model fingerprint, counts, index kind, derived threshold, build time
    entries.jsonl     one Entry a line (with its fingerprint), parsed as entries are asked for
    entry_index.json  every entry's id and answer content id, in order (what a load reads)
    entry_lines.npy   where each line of entries.jsonl ends, so a load need not read the file
    units.npz         for each retrieval unit: the entry it maps to, its kind, its content hash
    vectors.npy       the units' embeddings (reused for unchanged units on the next ingest)
    dense.faiss       FAISS inner-product index over vectors.npy
    bm25/             bm25s index over the units' texts, and its stems in id order (what a
                      search reads: `knowledge.index.LexicalIndex`)
    head.npz          a linear head over the units (`knowledge.head`), where the entries have
                      enough example questions to fit one
    calibration.json  written by `supportbot kb calibrate` (kept across ingests)

A build writes a new directory beside the old one and swaps it in with renames, so a reader never
sees half an index. Every entry yields several *units*: its question, each example question, and
its answer passage; a hit on any unit counts for the entry.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from bot.errors import IndexMissingError, KnowledgeError
from knowledge.embeddings import Embedder
from knowledge.head import EntryHead, HeadConfig
from knowledge.index import DenseIndex, LexicalIndex
from knowledge.types import Entry, content_id

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
UNIT_KINDS = ("question", "example", "passage")
#: Passages are cut to this many characters for embedding; the model truncates at 256 tokens.
PASSAGE_EMBED_CHARS = 1500


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What an ingest changed."""

    added: int
    updated: int
    removed: int
    unchanged: int
    embedded: int
    reused: int
    entries: int
    units: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Manifest:
    format: int
    model: str
    dimension: int
    entries: int
    units: int
    index_kind: str
    built_at: float
    derived_threshold: float | None = None
    derived_from: int = 0
    sources: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def units_of(entry: Entry) -> list[tuple[str, str]]:
    """The (kind, text) retrieval units of one entry, de-duplicated case-insensitively."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(kind: str, text: str) -> None:
        text = " ".join(text.split())
        key = text.casefold()
        if text and key not in seen:
            seen.add(key)
            out.append((kind, text))

    if entry.question:
        add("question", entry.question)
    for example in entry.examples:
        add("example", example)
    heading = " > ".join(p for p in (entry.title, *entry.heading_path) if p)
    lead = entry.question if entry.question and entry.question not in heading else ""
    passage = "\n".join(p for p in (heading, lead, entry.answer) if p)
    add("passage", passage[:PASSAGE_EMBED_CHARS])
    return out


def _entry_to_json(entry: Entry) -> dict[str, Any]:
    data = asdict(entry)
    data["fingerprint"] = entry.fingerprint
    return data


def _answer_id(entry: Entry) -> str:
    """What `KnowledgeBase.entry_by_answer` looks an answer up by."""
    return content_id(entry.answer.strip())


def _entry_from_json(data: Mapping[str, Any]) -> Entry:
    return Entry(
        id=data["id"],
        answer=data["answer"],
        question=data.get("question"),
        examples=tuple(data.get("examples") or ()),
        title=data.get("title"),
        url=data.get("url"),
        tags=tuple(data.get("tags") or ()),
        source=data.get("source", ""),
        heading_path=tuple(data.get("heading_path") or ()),
    )


#: Beside ``entries.jsonl``: every entry's id and its answer's content id, in entry order, so a
#: load needs neither to parse every entry (`StoredEntries`).
ENTRY_INDEX = "entry_index.json"
#: Beside ``entries.jsonl``: the byte offset of each of its lines' newline, in entry order, so a
#: load finds every entry without reading the file (`StoredEntries`).
ENTRY_LINES = "entry_lines.npy"


class StoredEntries(Sequence[Entry]):
    """The entries of ``entries.jsonl``, each parsed the first time it is asked for.

    A worker answers from a few entries at a time: parsing all of them at load took about a
    second of a 100,000-passage worker's three-second start-up, and their objects a hundred
    megabytes. The file is memory-mapped, and its pages are read only as entries are asked for
    when the build recorded where its lines end (`ENTRY_LINES`); otherwise the line ends are
    found at load, in one numpy pass over the whole file. Iterating parses everything, as a
    list would.

    Args:
        path: the ``entries.jsonl`` file, one JSON object per line.
        ends: the offset of each line's newline, as the build recorded them; ignored (and the
            file read) unless they fit the file.
    """

    def __init__(self, path: Path, ends: npt.NDArray[np.int64] | None = None) -> None:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self._data: mmap.mmap | bytes = (
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            )
        if ends is None or not self._fit(ends, size):
            ends = np.flatnonzero(np.frombuffer(self._data, dtype=np.uint8) == ord("\n"))
            if size and (not len(ends) or ends[-1] != size - 1):
                ends = np.append(ends, size)  # a last line without its newline
        starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else ends
        lines = ends > starts  # blank lines are not entries
        self._starts, self._ends = starts[lines].tolist(), ends[lines].tolist()
        self._parsed: dict[int, Entry] = {}

    def _fit(self, ends: npt.NDArray[np.int64], size: int) -> bool:
        """Whether recorded line ends can be this file's: increasing, the last one the file's
        last byte, a newline (the one page of the file this reads)."""
        if not len(ends):
            return size == 0
        return (
            ends.ndim == 1
            and int(ends[-1]) == size - 1
            and self._data[size - 1] == ord("\n")
            and int(ends[0]) >= 0
            and bool(np.all(ends[1:] > ends[:-1]))
        )

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self, index: slice) -> list[Entry]: ...

    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"entry {index} of {len(self)}")
        entry = self._parsed.get(position)
        if entry is None:
            line = self._data[self._starts[position] : self._ends[position]]
            entry = self._parsed[position] = _entry_from_json(json.loads(line))
        return entry

    def __iter__(self) -> Iterator[Entry]:
        return (self[i] for i in range(len(self)))

    def take(self, positions: Iterable[int]) -> list[Entry]:
        """`self[p]` for each position, with one dictionary lookup for those already parsed
        (a batched search takes twenty entries a query: 0.1 µs each, against 0.6 µs through
        `self[p]`)."""
        parsed = self._parsed
        return [parsed.get(p) or self[p] for p in positions]

    def __eq__(self, other: object) -> bool:
        """Equal to the same entries in the same order, as a list of them would be."""
        if isinstance(other, StoredEntries | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list


class KnowledgeBase:
    """Entries plus the indexes that find them. Cheap to construct; `load()` reads the disk.

    Args:
        directory: the index directory (created by the first ingest).
        embedder: turns texts into vectors; the same model must be used to build and to query.
        mmap: map the dense index's vectors from the file instead of reading them into memory.
        head: when an ingest fits a linear head over the entries' examples (`knowledge.head`).
    """

    def __init__(
        self,
        directory: Path | str,
        embedder: Embedder,
        *,
        mmap: bool = True,
        head: HeadConfig | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.embedder = embedder
        self.mmap = mmap
        self.head_config = head or HeadConfig()
        self.entries: Sequence[Entry] = ()
        #: Every entry's id, in entry order (what ties in the ranking are broken by).
        self.entry_ids: list[str] = []
        self.unit_entry: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.unit_kind: npt.NDArray[np.int8] = np.zeros(0, dtype=np.int8)
        self.dense: DenseIndex | None = None
        self.lexical: LexicalIndex | None = None
        self.head: EntryHead | None = None
        self.manifest: Manifest | None = None
        self._by_id: dict[str, int] = {}
        self._by_answer: dict[str, int] = {}

    # -- reading -----------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.directory / "manifest.json").exists()

    @property
    def loaded(self) -> bool:
        return self.manifest is not None

    def load(self) -> KnowledgeBase:
        """Read the index from disk (memory-mapped where possible)."""
        if not self.exists:
            raise IndexMissingError(
                f"no knowledge base at {self.directory}: run `supportbot kb ingest PATH` first"
            )
        raw = json.loads((self.directory / "manifest.json").read_text())
        raw["sources"] = tuple(raw.get("sources", ()))
        manifest = Manifest(**raw)
        if manifest.format != FORMAT_VERSION:
            raise KnowledgeError(
                f"{self.directory} was built by another version (format {manifest.format}); "
                "rebuild it with `supportbot kb ingest --replace PATH...`"
            )
        if manifest.model != self.embedder.fingerprint:
            raise KnowledgeError(
                f"{self.directory} was built with another embedding model; rebuild it with "
                "`supportbot kb ingest --replace PATH...` (or use the model it was built with)"
            )
        lines = self.directory / ENTRY_LINES
        self.entries = StoredEntries(
            self.directory / "entries.jsonl",
            np.load(lines).astype(np.int64, copy=False) if lines.exists() else None,
        )
        index_path = self.directory / ENTRY_INDEX
        if index_path.exists():
            index = json.loads(index_path.read_text(encoding="utf-8"))
            ids, answers = list(index["ids"]), list(index["answers"])
        else:  # built before the entry index existed: read every entry once
            ids = [e.id for e in self.entries]
            answers = [_answer_id(e) for e in self.entries]
        if len(ids) != len(self.entries) or len(answers) != len(ids):
            raise KnowledgeError(
                f"{self.directory} is inconsistent ({len(self.entries)} entries, {len(ids)} in "
                f"{ENTRY_INDEX}); rebuild it with `supportbot kb ingest --replace PATH...`"
            )
        self.entry_ids = ids
        units = np.load(self.directory / "units.npz")
        self.unit_entry = units["entry"].astype(np.int32)
        self.unit_kind = units["kind"].astype(np.int8)
        self.dense = DenseIndex.load(self.directory, mmap=self.mmap)
        self.lexical = LexicalIndex.load(self.directory, len(self.unit_entry))
        self.head = EntryHead.load(self.directory, len(ids))
        self._by_id = {entry_id: i for i, entry_id in enumerate(ids)}
        self._by_answer = {answer: i for i, answer in enumerate(answers)}
        self.manifest = manifest
        # Cached query vectors are dropped with every (re)load, so a changed knowledge base or
        # model never answers from vectors computed before it.
        self.embedder.invalidate_cache()
        return self

    @property
    def model_changed(self) -> bool:
        """True when the index on disk was built with another embedding model than this one."""
        try:
            raw = json.loads((self.directory / "manifest.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(raw.get("model")) and raw.get("model") != self.embedder.fingerprint

    def stored_entries(self) -> list[Entry]:
        """The entries on disk, read without loading the indexes (what `rebuild` re-embeds)."""
        path = self.directory / "entries.jsonl"
        if not path.exists():
            raise IndexMissingError(
                f"no knowledge base at {self.directory}: run `supportbot kb ingest PATH` first"
            )
        return list(StoredEntries(path))

    def rebuild(self, *, progress: bool = False) -> IngestReport:
        """Re-embed every stored entry with this knowledge base's model (after a model change).

        A calibration fitted on the old model's scores does not fit the new one's: it is kept
        as ``calibration.stale.json`` and no longer used; run `supportbot kb calibrate` again.
        """
        entries = self.stored_entries()
        calibration = self.directory / "calibration.json"
        stale = calibration.read_text() if calibration.exists() else None
        if stale is not None:
            calibration.unlink()
            logger.warning(
                "the calibration of %s was fitted with the previous model and is set aside as "
                "calibration.stale.json; run `supportbot kb calibrate --queries FILE` again",
                self.directory,
            )
        self.manifest = None
        report = self.ingest(entries, replace_all=True, progress=progress)
        if stale is not None:
            _atomic_write(self.directory / "calibration.stale.json", stale)
        return report

    def entries_at(self, positions: Iterable[int]) -> list[Entry]:
        """The entries at these positions, in their order (a retrieval's candidates)."""
        entries = self.entries
        if isinstance(entries, StoredEntries):
            return entries.take(positions)
        return [entries[p] for p in positions]

    def entry(self, entry_id: str) -> Entry | None:
        position = self._by_id.get(entry_id)
        return None if position is None else self.entries[position]

    def question_vector(self, entry_id: str) -> npt.NDArray[np.float32] | None:
        """The indexed vector of an entry's question (its ``question`` unit), or None when the
        entry is unknown or has no question. Units are stored entry by entry, the question
        first (`units_of`)."""
        position = self._by_id.get(entry_id)
        if position is None or self.dense is None:
            return None
        row = int(np.searchsorted(self.unit_entry, position))
        if (
            row >= len(self.unit_entry)
            or self.unit_entry[row] != position
            or self.unit_kind[row] != UNIT_KINDS.index("question")
        ):
            return None
        return self.dense.vector(row)

    def entry_by_answer(self, text: str) -> Entry | None:
        """The entry whose answer is exactly `text` (how a bot turn in a history is read)."""
        position = self._by_answer.get(content_id(text.strip()))
        return None if position is None else self.entries[position]

    def position(self, entry_id: str) -> int | None:
        return self._by_id.get(entry_id)

    def calibration(self) -> dict[str, Any] | None:
        """The calibration `supportbot kb calibrate` stored, if any."""
        path = self.directory / "calibration.json"
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.directory / "calibration.json", json.dumps(dict(data), indent=2))

    def set_derived_threshold(self, threshold: float | None, samples: int) -> None:
        """Record the threshold derived from the knowledge base itself in the manifest."""
        if self.manifest is None:
            raise KnowledgeError("load the knowledge base before setting its threshold")
        raw = asdict(self.manifest)
        raw["derived_threshold"] = threshold
        raw["derived_from"] = samples
        _atomic_write(self.directory / "manifest.json", json.dumps(raw, indent=2))
        raw["sources"] = tuple(raw["sources"])
        self.manifest = Manifest(**raw)

    def stats(self) -> dict[str, Any]:
        if not self.loaded:
            self.load()
        assert self.manifest is not None
        kinds = {k: int((self.unit_kind == i).sum()) for i, k in enumerate(UNIT_KINDS)}
        size = sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())
        return {
            "directory": str(self.directory),
            "entries": len(self.entries),
            "units": len(self.unit_entry),
            "units_by_kind": kinds,
            "index": self.manifest.index_kind,
            # Whether rankings use a linear head over the examples (`knowledge.head`).
            "head": self.head is not None,
            "model": str(self.embedder.model_path),
            "dimension": self.manifest.dimension,
            "sources": list(self.manifest.sources),
            "built_at": self.manifest.built_at,
            "disk_bytes": size,
            "derived_threshold": self.manifest.derived_threshold,
            "derived_from": self.manifest.derived_from,
        }

    # -- writing -----------------------------------------------------------------------------

    def ingest(
        self, entries: Sequence[Entry], *, replace_all: bool = False, progress: bool = False
    ) -> IngestReport:
        """Add or replace entries, re-embedding only units whose text is new.

        Entries replace every existing entry from the same `source`; with `replace_all`, every
        existing entry is dropped first. Entry ids must be unique across the knowledge base.
        """
        started = time.perf_counter()
        old_entries: list[Entry] = []
        old_vectors: dict[str, npt.NDArray[np.float32]] = {}
        if self.exists:
            if not self.loaded:
                try:
                    self.load()
                except KnowledgeError:
                    if not replace_all:
                        raise
            if self.loaded:
                old_entries = list(self.entries)
                old_vectors = self._vectors_by_hash()
        new_sources = {e.source for e in entries}
        kept = [] if replace_all else [e for e in old_entries if e.source not in new_sources]
        merged = kept + list(entries)
        self._check_unique(merged)

        old_by_id = {e.id: e for e in old_entries}
        added = sum(1 for e in entries if e.id not in old_by_id)
        unchanged = sum(
            1 for e in entries if e.id in old_by_id and old_by_id[e.id].fingerprint == e.fingerprint
        )
        updated = len(entries) - added - unchanged
        merged_ids = {e.id for e in merged}
        removed = sum(1 for e in old_entries if e.id not in merged_ids)

        unit_entry: list[int] = []
        unit_kind: list[int] = []
        unit_text: list[str] = []
        for position, entry in enumerate(merged):
            for kind, text in units_of(entry):
                unit_entry.append(position)
                unit_kind.append(UNIT_KINDS.index(kind))
                unit_text.append(text)
        hashes = [content_id(text) for text in unit_text]
        missing = sorted(
            {h: t for h, t in zip(hashes, unit_text, strict=True) if h not in old_vectors}.items()
        )
        if missing:
            texts = [t for _, t in missing]
            fresh = (
                self.embedder.encode_with_progress(texts, "Embedding passages")
                if progress
                else self.embedder.encode(texts)
            )
            for (h, _), vector in zip(missing, fresh, strict=True):
                old_vectors[h] = vector
        dimension = self.embedder.dimension
        vectors = (
            np.stack([old_vectors[h] for h in hashes]).astype(np.float32)
            if hashes
            else np.zeros((0, dimension), dtype=np.float32)
        )
        self._write(merged, unit_entry, unit_kind, hashes, unit_text, vectors)
        self.load()
        return IngestReport(
            added=added,
            updated=updated,
            removed=removed,
            unchanged=unchanged,
            embedded=len(missing),
            reused=len(hashes) - len(missing),
            entries=len(merged),
            units=len(hashes),
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _check_unique(entries: Iterable[Entry]) -> None:
        seen: dict[str, str] = {}
        for entry in entries:
            if entry.id in seen:
                raise KnowledgeError(
                    f"entry id {entry.id!r} comes from both {seen[entry.id]} and {entry.source}; "
                    "ids must be unique across the knowledge base"
                )
            seen[entry.id] = entry.source

    def _vectors_by_hash(self) -> dict[str, npt.NDArray[np.float32]]:
        path = self.directory / "vectors.npy"
        units = self.directory / "units.npz"
        if not path.exists() or not units.exists():
            return {}
        vectors = np.load(path, mmap_mode="r")
        hashes = np.load(units)["hash"]
        return {
            h.decode() if isinstance(h, bytes) else str(h): np.array(v)
            for h, v in zip(hashes, vectors, strict=True)
        }

    def _write(
        self,
        entries: Sequence[Entry],
        unit_entry: Sequence[int],
        unit_kind: Sequence[int],
        hashes: Sequence[str],
        texts: Sequence[str],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{self.directory.name}.building-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        ends = np.zeros(len(entries), dtype=np.int64)
        written = 0
        with (staging / "entries.jsonl").open("wb") as fh:
            for i, entry in enumerate(entries):
                line = json.dumps(_entry_to_json(entry), ensure_ascii=False).encode() + b"\n"
                fh.write(line)
                written += len(line)
                ends[i] = written - 1
        np.save(staging / ENTRY_LINES, ends)
        index = {"ids": [e.id for e in entries], "answers": [_answer_id(e) for e in entries]}
        (staging / ENTRY_INDEX).write_text(json.dumps(index), encoding="utf-8")
        np.savez(
            staging / "units.npz",
            entry=np.asarray(unit_entry, dtype=np.int32),
            kind=np.asarray(unit_kind, dtype=np.int8),
            hash=np.asarray([h.encode() for h in hashes], dtype="S16"),
        )
        np.save(staging / "vectors.npy", vectors)
        dense = DenseIndex.build(vectors)
        dense.save(staging)
        LexicalIndex.build(texts).save(staging)
        kinds = np.asarray(unit_kind, dtype=np.int8)
        head = EntryHead.fit(
            vectors,
            np.asarray(unit_entry, dtype=np.int32),
            kinds != UNIT_KINDS.index("passage"),
            len(entries),
            self.head_config,
        )
        if head is not None:
            head.save(staging)
        calibration = self.directory / "calibration.json"
        if calibration.exists():
            shutil.copy2(calibration, staging / "calibration.json")
        manifest = Manifest(
            format=FORMAT_VERSION,
            model=self.embedder.fingerprint,
            dimension=int(vectors.shape[1]) if len(vectors) else self.embedder.dimension,
            entries=len(entries),
            units=len(hashes),
            index_kind=dense.kind,
            built_at=time.time(),
            sources=tuple(sorted({e.source for e in entries})),
        )
        (staging / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
        old = parent / f".{self.directory.name}.old-{os.getpid()}"
        if self.directory.exists():
            self.directory.rename(old)
        staging.rename(self.directory)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        self.manifest = None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
