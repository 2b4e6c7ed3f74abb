"""Tests for knowledge.base: incremental ingest, persistence and loading of a knowledge base.

Every test builds its own tiny knowledge base (a handful of entries) in tmp_path with the real
session embedder, so re-embedding counts are exact and cheap.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import mmap
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.errors import IndexMissingError, KnowledgeError
from knowledge.base import (
    ENTRY_INDEX,
    ENTRY_LINES,
    PASSAGE_EMBED_CHARS,
    UNIT_KINDS,
    KnowledgeBase,
    StoredEntries,
    units_of,
)
from knowledge.embeddings import Embedder
from knowledge.types import Entry, content_id

pytestmark = pytest.mark.model

A = "faq-a.jsonl"
B = "faq-b.jsonl"


def _entries_a() -> list[Entry]:
    return [
        Entry(
            id="reset-password",
            question="How do I reset my password?",
            answer="Click Forgot password on the sign-in page; the link works for 60 minutes.",
            examples=("I forgot my password", "password reset email never arrived"),
            title="Reset your password",
            source=A,
        ),
        Entry(
            id="export-pdf",
            question="How do I export a note as a PDF?",
            answer="Open the note, choose ••• > Export > PDF and pick a page size.",
            examples=("save note as pdf",),
            source=A,
        ),
        Entry(
            id="import-evernote",
            question="How do I import my notes from Evernote?",
            answer="Export each notebook as an .enex file, then upload it under Settings > Import.",
            source=A,
        ),
        Entry(
            id="pricing-plus",
            question="How much does the Plus plan cost?",
            answer="Plus costs $8 per user per month, or $72 per year.",
            examples=("plus price?",),
            source=A,
        ),
        Entry(
            id="support-hours",
            question="What are your support hours?",
            answer="Monday to Friday, 07:00-19:00 UTC.",
            source=A,
        ),
    ]


def _entries_b() -> list[Entry]:
    return [
        Entry(
            id="sso",
            question="Do you support single sign-on?",
            answer="Yes, SAML SSO is available on the Business plan.",
            source=B,
        ),
        Entry(
            id="webhooks",
            question="How do I set up webhooks?",
            answer="Add an HTTPS endpoint under Settings > Integrations > Webhooks.",
            source=B,
        ),
    ]


def _unit_count(entries: list[Entry]) -> int:
    return sum(len(units_of(e)) for e in entries)


def _unique_texts(entries: list[Entry]) -> int:
    return len({text for e in entries for _, text in units_of(e)})


def _vectors_by_text(kb: KnowledgeBase) -> dict[str, np.ndarray]:
    vectors = np.load(kb.directory / "vectors.npy")
    texts = [text for e in kb.entries for _, text in units_of(e)]
    assert len(texts) == len(vectors)
    return dict(zip(texts, vectors, strict=True))


@pytest.fixture
def kb(tmp_path: Path, embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase(tmp_path / "index", embedder)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The tiny knowledge base of `_entries_a()`, built once (tests copy it)."""
    directory = tmp_path_factory.mktemp("tiny-kb") / "index"
    KnowledgeBase(directory, embedder).ingest(_entries_a())
    return directory


@pytest.fixture
def built(template: Path, kb: KnowledgeBase) -> KnowledgeBase:
    shutil.copytree(template, kb.directory)
    return kb.load()


# --- units ----------------------------------------------------------------------------------


def test_units_of_deduplicates_case_and_whitespace_insensitively() -> None:
    entry = Entry(
        id="x",
        question="How do I reset my password?",
        answer="Use the link.",
        examples=(
            "how do I   reset my PASSWORD?",
            "forgot password",
            "Forgot  Password",
            "  ",
            "can't log in",
        ),
    )
    units = units_of(entry)
    assert units == [
        ("question", "How do I reset my password?"),
        ("example", "forgot password"),
        ("example", "can't log in"),
        ("passage", "How do I reset my password? Use the link."),
    ]
    assert all(kind in UNIT_KINDS for kind, _ in units)


def test_units_of_passage_carries_title_headings_and_question() -> None:
    article = Entry(
        id="p1",
        answer="Open Settings > Offline.",
        title="Offline use",
        heading_path=("Mobile", "Android"),
    )
    assert units_of(article) == [
        ("passage", "Offline use > Mobile > Android Open Settings > Offline.")
    ]
    # A question that is already part of the heading is not repeated in the passage.
    headed = Entry(
        id="p2", answer="Yes.", question="Android", title="Offline use", heading_path=("Android",)
    )
    assert units_of(headed)[-1] == ("passage", "Offline use > Android Yes.")


def test_units_of_cuts_long_passages() -> None:
    entry = Entry(id="long", answer="x" * 5000)
    [(kind, text)] = units_of(entry)
    assert kind == "passage"
    assert len(text) == PASSAGE_EMBED_CHARS


# --- ingest reports --------------------------------------------------------------------------


def test_first_ingest_adds_and_embeds_everything(kb: KnowledgeBase) -> None:
    entries = _entries_a()
    report = kb.ingest(entries)
    units = _unit_count(entries)
    assert (report.added, report.updated, report.removed, report.unchanged) == (5, 0, 0, 0)
    assert report.embedded == _unique_texts(entries) == units
    assert report.reused == 0
    assert (report.entries, report.units) == (5, units)
    assert report.seconds > 0
    assert kb.loaded and kb.exists
    assert [e.id for e in kb.entries] == [e.id for e in entries]


def test_reingesting_identical_content_embeds_nothing(built: KnowledgeBase) -> None:
    before = np.load(built.directory / "vectors.npy")
    report = built.ingest(_entries_a())
    units = _unit_count(_entries_a())
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 5)
    assert report.embedded == 0
    assert report.reused == units == report.units
    assert np.array_equal(np.load(built.directory / "vectors.npy"), before)


def test_a_fresh_instance_reuses_vectors_from_disk(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    report = KnowledgeBase(built.directory, embedder).ingest(_entries_a())
    assert report.embedded == 0 and report.unchanged == 5


def test_changing_one_answer_reembeds_only_its_passage(built: KnowledgeBase) -> None:
    old = _vectors_by_text(built)
    entries = _entries_a()
    entries[1] = dataclasses.replace(entries[1], answer="Choose Export > PDF from the ••• menu.")
    report = built.ingest(entries)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 1, 0, 4)
    assert report.embedded == 1
    assert report.reused == report.units - 1
    new = _vectors_by_text(built)
    changed = [t for t in new if t not in old]
    assert changed == ["How do I export a note as a PDF? Choose Export > PDF from the ••• menu."]
    for text in new.keys() & old.keys():
        assert np.array_equal(new[text], old[text])
    assert built.entry("export-pdf") == entries[1]


def test_changing_a_question_reembeds_the_question_and_the_passage(built: KnowledgeBase) -> None:
    entries = _entries_a()
    entries[4] = dataclasses.replace(entries[4], question="When is support open?")
    report = built.ingest(entries)
    assert report.updated == 1 and report.unchanged == 4
    assert report.embedded == 2  # the new question unit and the passage that leads with it


def test_changing_only_metadata_counts_as_updated_but_embeds_nothing(
    built: KnowledgeBase,
) -> None:
    entries = _entries_a()
    entries[4] = dataclasses.replace(entries[4], url="https://help.example/hours", tags=("x",))
    report = built.ingest(entries)
    assert report.updated == 1 and report.embedded == 0
    assert built.entry("support-hours").url == "https://help.example/hours"


def test_adding_an_entry_embeds_only_its_units(built: KnowledgeBase) -> None:
    extra = Entry(id="new", question="Is there a dark mode?", answer="Yes, in Settings.", source=A)
    report = built.ingest([*_entries_a(), extra])
    assert (report.added, report.unchanged, report.removed) == (1, 5, 0)
    assert report.embedded == len(units_of(extra)) == 2


def test_removing_an_entry_from_its_source_removes_it(built: KnowledgeBase) -> None:
    entries = [e for e in _entries_a() if e.id != "import-evernote"]
    report = built.ingest(entries)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 1, 4)
    assert report.embedded == 0
    assert built.entry("import-evernote") is None
    assert len(built.entries) == 4
    assert report.units == _unit_count(entries) == len(built.unit_entry) == len(built.dense)
    vector = built.embedder.encode(["How do I import my notes from Evernote?"])[0]
    _, scores = built.dense.search(vector[None, :], 1)
    assert scores[0, 0] < 0.99  # its question is gone from the dense index
    assert not built.lexical.scores("evernote").any()  # and from the lexical one


def test_entries_from_another_source_survive(built: KnowledgeBase) -> None:
    report_b = built.ingest(_entries_b())
    assert (report_b.added, report_b.removed, report_b.entries) == (2, 0, 7)
    report_a = built.ingest(_entries_a()[:2])
    assert report_a.removed == 3
    assert report_a.entries == 4
    assert {e.id for e in built.entries} == {"reset-password", "export-pdf", "sso", "webhooks"}
    assert built.manifest is not None
    assert built.manifest.sources == (A, B)


def test_replace_all_drops_every_other_entry(built: KnowledgeBase) -> None:
    built.ingest(_entries_b())
    report = built.ingest(_entries_a()[:1], replace_all=True)
    assert report.removed == 6
    assert report.unchanged == 1 and report.embedded == 0
    assert [e.id for e in built.entries] == ["reset-password"]
    assert built.manifest is not None and built.manifest.sources == (A,)


def test_duplicate_ids_across_sources_fail_and_leave_the_index_alone(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    files = {p.name: p.read_bytes() for p in built.directory.iterdir() if p.is_file()}
    clash = Entry(id="export-pdf", question="PDF?", answer="Elsewhere.", source=B)
    with pytest.raises(KnowledgeError, match=r"'export-pdf'.*faq-a\.jsonl.*faq-b\.jsonl"):
        built.ingest([*_entries_b(), clash])
    assert {p.name: p.read_bytes() for p in built.directory.iterdir() if p.is_file()} == files
    assert not [p for p in built.directory.parent.iterdir() if p.name.startswith(".")]
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert [e.id for e in reloaded.entries] == [e.id for e in _entries_a()]


def test_duplicate_ids_within_one_ingest_fail(kb: KnowledgeBase) -> None:
    entries = _entries_a()
    with pytest.raises(KnowledgeError, match="must be unique"):
        kb.ingest([*entries, dataclasses.replace(entries[0], answer="other")])
    assert not kb.exists


def test_shared_unit_texts_are_embedded_once(kb: KnowledgeBase) -> None:
    entries = [
        Entry(id="a", question="Can I pay by invoice?", answer="Yes.", examples=("invoice",)),
        Entry(id="b", question="Where are my invoices?", answer="Billing.", examples=("invoice",)),
    ]
    report = kb.ingest(entries)
    assert report.units == 6
    assert report.embedded == _unique_texts(entries) == 5
    assert report.reused == 1


# --- persistence -----------------------------------------------------------------------------


def test_manifest_and_entries_persist_and_reload(built: KnowledgeBase, embedder: Embedder) -> None:
    built.ingest(_entries_b())
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert reloaded.entries == built.entries
    assert reloaded.entries == _entries_a() + _entries_b()
    assert np.array_equal(reloaded.unit_entry, built.unit_entry)
    assert np.array_equal(reloaded.unit_kind, built.unit_kind)
    manifest = reloaded.manifest
    assert manifest is not None
    assert manifest.model == embedder.fingerprint
    assert manifest.dimension == 384
    assert manifest.entries == 7
    assert manifest.units == _unit_count(_entries_a() + _entries_b()) == len(reloaded.unit_entry)
    assert manifest.index_kind == "flat"
    assert manifest.sources == (A, B)
    assert len(reloaded.dense) == manifest.units
    assert len(reloaded.lexical) == manifest.units
    vectors = np.load(built.directory / "vectors.npy")
    assert vectors.shape == (manifest.units, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    lines = (built.directory / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["fingerprint"] for line in lines] == [
        e.fingerprint for e in reloaded.entries
    ]


def test_unit_positions_map_back_to_their_entries(built: KnowledgeBase) -> None:
    expected = [
        (position, UNIT_KINDS.index(kind))
        for position, entry in enumerate(built.entries)
        for kind, _ in units_of(entry)
    ]
    assert list(zip(built.unit_entry.tolist(), built.unit_kind.tolist(), strict=True)) == expected
    stats = built.stats()
    assert stats["entries"] == 5 and stats["units"] == len(expected)
    assert stats["head"] is False  # five entries with few examples: nothing to learn from
    assert stats["units_by_kind"] == {
        kind: sum(1 for _, k in expected if k == i) for i, kind in enumerate(UNIT_KINDS)
    }


def test_lookup_helpers(built: KnowledgeBase) -> None:
    plus = built.entry("pricing-plus")
    assert plus is not None and plus.question == "How much does the Plus plan cost?"
    assert built.entry("nope") is None
    assert built.position("reset-password") == 0
    assert built.position("nope") is None
    assert built.entry_by_answer(f"  {plus.answer}\n") == plus
    assert built.entry_by_answer("something else") is None


def test_calibration_survives_reingest(built: KnowledgeBase) -> None:
    assert built.calibration() is None
    built.save_calibration({"threshold": 0.4, "origin": "calibrated"})
    built.ingest(_entries_b())
    assert built.calibration() == {"threshold": 0.4, "origin": "calibrated"}


def test_derived_threshold_is_stored_in_the_manifest(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    built.set_derived_threshold(0.3, 42)
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert reloaded.manifest is not None
    assert (reloaded.manifest.derived_threshold, reloaded.manifest.derived_from) == (0.3, 42)


def test_loading_a_missing_index_says_to_ingest(kb: KnowledgeBase) -> None:
    assert not kb.exists
    with pytest.raises(IndexMissingError, match="supportbot kb ingest"):
        kb.load()


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_an_index_built_with_another_model_fails_to_load_clearly(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    _edit_manifest(built.directory, model="0123456789abcdef")
    fresh = KnowledgeBase(built.directory, embedder)
    with pytest.raises(KnowledgeError, match="another embedding model") as caught:
        fresh.load()
    assert "--replace" in str(caught.value)
    assert str(built.directory) in str(caught.value)
    # An incremental ingest would mix vectors from two models: refused too.
    with pytest.raises(KnowledgeError, match="another embedding model"):
        KnowledgeBase(built.directory, embedder).ingest(_entries_b())


def test_replace_all_rebuilds_an_index_from_another_model(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    _edit_manifest(built.directory, model="0123456789abcdef")
    fresh = KnowledgeBase(built.directory, embedder)
    report = fresh.ingest(_entries_a(), replace_all=True)
    # Nothing could be trusted from the old index: every unit is embedded again.
    assert report.embedded == report.units
    assert KnowledgeBase(built.directory, embedder).load().manifest.model == embedder.fingerprint


def test_an_index_of_another_format_fails_to_load(built: KnowledgeBase, embedder: Embedder) -> None:
    _edit_manifest(built.directory, format=99)
    with pytest.raises(KnowledgeError, match="another version"):
        KnowledgeBase(built.directory, embedder).load()


def test_content_id_is_stable() -> None:
    assert content_id("a", "b") == content_id("a", "b")
    assert content_id("a", "b") != content_id("ab")
    assert len(content_id("x")) == 16


# --- entries read as they are needed ---------------------------------------------------------


def test_a_load_parses_no_entry_until_one_is_asked_for(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    reloaded = KnowledgeBase(built.directory, embedder).load()
    entries = reloaded.entries
    assert isinstance(entries, StoredEntries)
    assert entries._parsed == {}  # the ids and answers come from the entry index
    assert reloaded.position("export-pdf") == 1
    assert reloaded.entry_by_answer(_entries_a()[2].answer) == _entries_a()[2]
    assert set(entries._parsed) == {2}
    assert entries[-1] == _entries_a()[-1] and entries[1:3] == _entries_a()[1:3]
    with pytest.raises(IndexError):
        entries[len(entries)]


def test_a_load_reads_no_page_of_the_entries_until_one_is_asked_for(
    built: KnowledgeBase, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build records where each line of ``entries.jsonl`` ends (`ENTRY_LINES`): a load
    reads only the file's last byte, where it used to read all of it to find the lines."""
    touched: list[object] = []
    frombuffer = np.frombuffer

    def watched(data: Any, *args: Any, **kwargs: Any) -> Any:
        touched.append(data)
        return frombuffer(data, *args, **kwargs)

    monkeypatch.setattr(np, "frombuffer", watched)
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert not any(isinstance(data, mmap.mmap) for data in touched)
    assert reloaded.entries == _entries_a()  # every entry where its line is
    assert reloaded.entry_by_answer(_entries_a()[2].answer) == _entries_a()[2]


@pytest.mark.parametrize(
    "ends",
    [None, [5, 3], [], "short", "shifted"],
    ids=["missing", "not increasing", "none", "one line short", "one byte off"],
)
def test_line_ends_that_do_not_fit_the_entries_are_found_again(
    built: KnowledgeBase, embedder: Embedder, ends: Any
) -> None:
    path = built.directory / ENTRY_LINES
    recorded = np.load(path)
    if ends is None:
        path.unlink()  # as an index built by an earlier version
    elif ends == "short":
        np.save(path, recorded[:-1])
    elif ends == "shifted":
        np.save(path, recorded - 1)
    else:
        np.save(path, np.asarray(ends, dtype=np.int64))
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert reloaded.entries == _entries_a()


def test_an_index_without_the_entry_index_still_loads(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    (built.directory / ENTRY_INDEX).unlink()  # as an index built by an earlier version
    reloaded = KnowledgeBase(built.directory, embedder).load()
    assert reloaded.entries == _entries_a()
    assert reloaded.entry_ids == [e.id for e in _entries_a()]
    assert reloaded.entry_by_answer(_entries_a()[1].answer) == _entries_a()[1]


def test_an_entry_index_that_does_not_match_the_entries_fails_clearly(
    built: KnowledgeBase, embedder: Embedder
) -> None:
    path = built.directory / ENTRY_INDEX
    index = json.loads(path.read_text())
    path.write_text(json.dumps({"ids": index["ids"][:-1], "answers": index["answers"][:-1]}))
    with pytest.raises(KnowledgeError, match="rebuild it"):
        KnowledgeBase(built.directory, embedder).load()


def test_stored_entries_read_any_text_and_skip_blank_lines(tmp_path: Path) -> None:
    odd = [
        Entry(id="ü-1", answer="Grüße — 你好 👋\nzweite Zeile", question="Straße?"),
        Entry(id="e\u0301", answer='quotes " and \\ backslashes', tags=("a", "b")),
    ]
    path = tmp_path / "entries.jsonl"
    lines = [json.dumps(dataclasses.asdict(e), ensure_ascii=False) for e in odd]
    path.write_text(f"{lines[0]}\n\n{lines[1]}", encoding="utf-8")  # a blank line, no last \n
    stored = StoredEntries(path)
    assert len(stored) == 2
    assert list(stored) == odd == stored
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert len(StoredEntries(empty)) == 0 and list(StoredEntries(empty)) == []


def test_a_reload_frees_the_old_indexes_without_the_garbage_collector(
    sample_kb_dir: Path, embedder: Embedder
) -> None:
    """A serving process freezes what it loaded (`bot.service.settle_heap`): the collector never
    looks at those objects again, so they must not need it to be freed after a reload."""
    kb = KnowledgeBase(sample_kb_dir, embedder).load()
    assert kb.lexical is not None and kb.dense is not None
    old = [kb.entries, kb.dense, kb.lexical, kb.lexical._words]
    watched = [weakref.ref(part) for part in old]
    del old
    gc.collect()
    gc.disable()
    try:
        kb.load()
        assert [ref() for ref in watched] == [None] * len(watched)
    finally:
        gc.enable()
