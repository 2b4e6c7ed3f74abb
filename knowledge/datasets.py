"""Turn labelled intent datasets (BANKING77 and its out-of-scope split) into KB and query files.

An intent becomes one knowledge-base entry whose example questions are the intent's training
queries; held-out queries become a queries file whose ``expected`` is the intent (or null for
out-of-scope queries). With BANKING77-OOS, ``oos-kb-decline.jsonl`` is ``oos-kb.jsonl`` plus one
entry that declines (`knowledge.types.Entry.declines`), whose examples are the split's in-domain
out-of-scope *training* queries (``id-oos/train``): what a company knows its bot must not answer.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from bot.errors import IngestError
from knowledge.types import DECLINE_TAG

OOS_LABEL = "oos"


def pretty(intent: str) -> str:
    """`card_arrival` → `Card arrival`."""
    words = intent.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = {f.lower(): f for f in reader.fieldnames or ()}
        if "text" not in fields or not ({"category", "label", "intent"} & set(fields)):
            raise IngestError(path, "expected columns text and category (or label/intent)")
        label_field = fields.get("category") or fields.get("label") or fields["intent"]
        return [(row[fields["text"]].strip(), row[label_field].strip()) for row in reader]


def _read_seq(directory: Path, *, labelled: bool = True) -> list[tuple[str, str]]:
    texts = (directory / "seq.in").read_text(encoding="utf-8").splitlines()
    if labelled and (directory / "label").exists():
        labels = (directory / "label").read_text(encoding="utf-8").splitlines()
        if len(labels) != len(texts):
            raise IngestError(directory, "seq.in and label have different line counts")
    else:
        labels = [OOS_LABEL] * len(texts)
    return [(t.strip(), lab.strip()) for t, lab in zip(texts, labels, strict=True) if t.strip()]


def write_kb(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in rows:
        if intent != OOS_LABEL:
            by_intent[intent].append(text)
    with path.open("w", encoding="utf-8") as fh:
        for intent in sorted(by_intent):
            entry = {
                "id": intent,
                "title": pretty(intent),
                "question": pretty(intent),
                "answer": f"Here is our help article about “{pretty(intent).lower()}”.",
                "examples": list(dict.fromkeys(by_intent[intent])),
                "tags": ["intent"],
            }
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return len(by_intent)


#: The out-of-scope entry of ``oos-kb-decline.jsonl``: the in-domain out-of-scope training
#: queries as questions to decline (`knowledge.types.Entry.declines`).
DECLINE_ENTRY = {
    "id": "out-of-scope",
    "title": "Not answered here",
    "answer": "That is not something I can answer here.",
    "tags": [DECLINE_TAG],
}


def write_decline_kb(path: Path, kb: Path, declined: Sequence[str]) -> int:
    """`kb` plus one entry whose examples are `declined`; returns the number of entries."""
    lines = kb.read_text(encoding="utf-8").splitlines()
    entry = {**DECLINE_ENTRY, "examples": list(dict.fromkeys(declined))}
    lines.append(json.dumps(entry, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_queries(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for text, intent in rows:
            expected = None if intent == OOS_LABEL else intent
            fh.write(json.dumps({"text": text, "expected": expected}, ensure_ascii=False) + "\n")
            count += 1
    return count


def import_intents(root: Path, out: Path) -> dict[str, tuple[Path, int]]:
    """Write KB and query files for every split found under `root`; returns name → (path, n)."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[Path, int]] = {}

    def emit(name: str, kind: str, rows: Sequence[tuple[str, str]]) -> None:
        path = out / f"{name}.jsonl"
        n = write_kb(path, rows) if kind == "kb" else write_queries(path, rows)
        written[name] = (path, n)

    if (root / "train.csv").exists():
        emit("kb", "kb", _read_csv(root / "train.csv"))
        if (root / "test.csv").exists():
            emit("test", "queries", _read_csv(root / "test.csv"))
    oos = root / "oos" if (root / "oos").is_dir() else root
    if (oos / "train" / "seq.in").exists():
        emit("oos-kb", "kb", _read_seq(oos / "train"))
        if (oos / "id-oos" / "train" / "seq.in").exists():
            declined = [t for t, _ in _read_seq(oos / "id-oos" / "train", labelled=False)]
            path = out / "oos-kb-decline.jsonl"
            written["oos-kb-decline"] = (
                path,
                write_decline_kb(path, written["oos-kb"][0], declined),
            )
        for split in ("valid", "test"):
            if not (oos / split / "seq.in").exists():
                continue
            rows = _read_seq(oos / split)
            for extra in ("id-oos", "ood-oos"):
                if (oos / extra / split / "seq.in").exists():
                    rows += [(t, OOS_LABEL) for t, _ in _read_seq(oos / extra / split)]
            emit(f"oos-{split}", "queries", rows)
    if not written:
        raise IngestError(
            root, "no intent data found: expected train.csv/test.csv or oos/train/seq.in"
        )
    return written
