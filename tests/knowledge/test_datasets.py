"""Tests for knowledge.datasets: BANKING77-shaped intent data → KB and query files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import IngestError
from knowledge.datasets import OOS_LABEL, import_intents, pretty
from knowledge.ingest import load_sources
from tests.conftest import DATA

BANKING77 = DATA / "banking77"

TRAIN_CSV = """text,category
I am still waiting on my card?,card_arrival
"When will my card arrive, it's been a week",card_arrival
I am still waiting on my card?,card_arrival
I lost my card,lost_or_stolen_card
Someone stole my card!,lost_or_stolen_card
How do I top up?,top_up_by_card
"Can I top up with a ""virtual"" card?",top_up_by_card
"""

TEST_CSV = """text,category
Where is my card?,card_arrival
my card was stolen,lost_or_stolen_card
top up please,top_up_by_card
has my card shipped yet,card_arrival
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _lines(*items: str) -> str:
    return "".join(f"{item}\n" for item in items)


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def banking(tmp_path: Path) -> Path:
    root = tmp_path / "banking77"
    _write(root / "train.csv", TRAIN_CSV)
    _write(root / "test.csv", TEST_CSV)
    oos = root / "oos"
    _write(oos / "train" / "seq.in", _lines("where is my card", "card lost", "", "what is love"))
    _write(oos / "train" / "label", _lines("card_arrival", "lost_or_stolen_card", "x", OOS_LABEL))
    _write(oos / "valid" / "seq.in", _lines("is my card coming", "i lost it", "card eta"))
    _write(oos / "valid" / "label", _lines("card_arrival", "lost_or_stolen_card", "card_arrival"))
    _write(oos / "id-oos" / "valid" / "seq.in", _lines("exchange rate?", "fx fees"))
    _write(oos / "id-oos" / "valid" / "label", _lines(OOS_LABEL, OOS_LABEL))
    _write(oos / "ood-oos" / "valid" / "seq.in", _lines("tell me a joke"))  # no label file
    return root


def test_pretty_names() -> None:
    assert pretty("card_arrival") == "Card arrival"
    assert pretty("top-up-by-card") == "Top up by card"
    assert pretty("") == ""


def test_import_writes_every_split_with_the_right_counts(banking: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = import_intents(banking, out)
    assert {name: n for name, (_, n) in written.items()} == {
        "kb": 3,
        "test": 4,
        "oos-kb": 2,
        "oos-valid": 6,
    }
    for name, (path, _) in written.items():
        assert path == out / f"{name}.jsonl" and path.exists()
    assert not (out / "oos-test.jsonl").exists()


def test_kb_file_has_one_entry_per_intent_with_unique_examples(
    banking: Path, tmp_path: Path
) -> None:
    written = import_intents(banking, tmp_path / "out")
    kb = _read_jsonl(written["kb"][0])
    assert [e["id"] for e in kb] == ["card_arrival", "lost_or_stolen_card", "top_up_by_card"]
    arrival = kb[0]
    assert arrival["title"] == arrival["question"] == "Card arrival"
    assert arrival["examples"] == [
        "I am still waiting on my card?",
        "When will my card arrive, it's been a week",
    ]
    assert arrival["tags"] == ["intent"]
    assert "card arrival" in str(arrival["answer"])
    assert kb[2]["examples"] == ["How do I top up?", 'Can I top up with a "virtual" card?']
    # The KB file is a valid FAQ source for ingest.
    entries = load_sources([written["kb"][0]])
    assert [e.id for e in entries] == ["card_arrival", "lost_or_stolen_card", "top_up_by_card"]
    assert entries[1].examples == ("I lost my card", "Someone stole my card!")


def test_query_files_carry_the_expected_intent_or_null(banking: Path, tmp_path: Path) -> None:
    written = import_intents(banking, tmp_path / "out")
    test = _read_jsonl(written["test"][0])
    assert test[0] == {"text": "Where is my card?", "expected": "card_arrival"}
    assert [q["expected"] for q in test] == [
        "card_arrival",
        "lost_or_stolen_card",
        "top_up_by_card",
        "card_arrival",
    ]
    valid = _read_jsonl(written["oos-valid"][0])
    assert [q["expected"] for q in valid] == [
        "card_arrival",
        "lost_or_stolen_card",
        "card_arrival",
        None,
        None,
        None,
    ]
    assert [q["text"] for q in valid][3:] == ["exchange rate?", "fx fees", "tell me a joke"]


def test_oos_kb_skips_blank_lines_and_out_of_scope_training_rows(
    banking: Path, tmp_path: Path
) -> None:
    written = import_intents(banking, tmp_path / "out")
    oos_kb = _read_jsonl(written["oos-kb"][0])
    assert {str(e["id"]): e["examples"] for e in oos_kb} == {
        "card_arrival": ["where is my card"],
        "lost_or_stolen_card": ["card lost"],
    }


def test_label_column_may_be_called_label(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "train.csv", "Text,Label\nhello there,greet\nbye now,leave\n")
    written = import_intents(tmp_path / "in", tmp_path / "out")
    assert written.keys() == {"kb"}
    assert written["kb"][1] == 2


def test_oos_splits_may_sit_at_the_root(tmp_path: Path) -> None:
    root = tmp_path / "clinc"
    _write(root / "train" / "seq.in", _lines("a", "b"))
    _write(root / "train" / "label", _lines("x", "y"))
    _write(root / "test" / "seq.in", _lines("c"))
    _write(root / "test" / "label", _lines("x"))
    written = import_intents(root, tmp_path / "out")
    assert {name: n for name, (_, n) in written.items()} == {"oos-kb": 2, "oos-test": 1}


def test_a_folder_with_nothing_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing here")
    with pytest.raises(IngestError, match="no intent data found"):
        import_intents(tmp_path / "empty", tmp_path / "out")


def test_missing_columns_raise(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "train.csv", "sentence,category\nhi,greet\n")
    with pytest.raises(IngestError, match="expected columns text and category") as caught:
        import_intents(tmp_path / "in", tmp_path / "out")
    assert caught.value.path == tmp_path / "in" / "train.csv"


def test_mismatched_seq_and_label_raise(banking: Path, tmp_path: Path) -> None:
    _write(banking / "oos" / "valid" / "label", _lines("card_arrival"))
    with pytest.raises(IngestError, match="different line counts"):
        import_intents(banking, tmp_path / "out")


@pytest.mark.slow
def test_import_real_banking77(tmp_path: Path) -> None:
    if not (BANKING77 / "train.csv").exists():
        pytest.skip(f"BANKING77 is not at {BANKING77}")
    written = import_intents(BANKING77, tmp_path)
    assert written["kb"][1] == 77
    assert written["test"][1] == 3080
    kb = _read_jsonl(written["kb"][0])
    assert len(kb) == 77 and len({e["id"] for e in kb}) == 77
    assert all(e["examples"] for e in kb)
    test = _read_jsonl(written["test"][0])
    assert len(test) == 3080
    assert all(q["expected"] in {e["id"] for e in kb} for q in test)
    oos = BANKING77 / "oos"
    if (oos / "valid" / "seq.in").exists():

        def count(path: Path) -> int:
            return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())

        valid = _read_jsonl(written["oos-valid"][0])
        extra = sum(
            count(oos / kind / "valid" / "seq.in")
            for kind in ("id-oos", "ood-oos")
            if (oos / kind / "valid" / "seq.in").exists()
        )
        assert len(valid) == count(oos / "valid" / "seq.in") + extra
        assert sum(q["expected"] is None for q in valid) == extra > 0


def test_in_domain_out_of_scope_training_queries_become_an_entry_that_declines(
    banking: Path, tmp_path: Path
) -> None:
    oos = banking / "oos" / "id-oos" / "train"
    _write(oos / "seq.in", _lines("what is the exchange rate", "why a fee for fx?", ""))
    _write(oos / "label", _lines(OOS_LABEL, OOS_LABEL, OOS_LABEL))
    written = import_intents(banking, tmp_path / "out")
    path, count = written["oos-kb-decline"]
    assert count == 3
    entries = load_sources([path])
    assert [e.id for e in entries] == ["card_arrival", "lost_or_stolen_card", "out-of-scope"]
    assert [e.declines for e in entries] == [False, False, True]
    assert entries[2].examples == ("what is the exchange rate", "why a fee for fx?")
    # The plain out-of-scope knowledge base is unchanged: nothing in it declines.
    assert not any(e.declines for e in load_sources([written["oos-kb"][0]]))
