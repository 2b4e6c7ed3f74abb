"""Generic chat logs: CSV or JSONL, one message a row.

Columns (rename them with `options.columns`, e.g. `{"conversation_id": "ticket"}`):
`conversation_id`, `role`, `author`, `text`, `timestamp` (ISO 8601 or Unix seconds), and
optional `platform`, `resolved` (true/false/yes/no/1/0), `feedback` (up/down, 👍/👎 on that
row's answer) and `intent` (a label for the conversation). `role` and `text` are required, as is
`conversation_id`; `author` defaults to the role.

Role values: customer, user, client, end-user, requester → customer; agent, support, staff,
human, operator → agent; bot, assistant, ai → bot; system rows are dropped. Rows are kept in
file order within a conversation unless every row has a timestamp, then sorted by it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from training.errors import TrainingDataError
from training.importers.base import ImportOptions, ImportResult, People
from training.model import Conversation, Signals, Speaker, Turn, parse_time

__all__ = ["DEFAULT_COLUMNS", "ROLE_ALIASES", "load_csv", "load_jsonl"]

logger = logging.getLogger(__name__)

DEFAULT_COLUMNS: Mapping[str, str] = {
    "conversation_id": "conversation_id",
    "role": "role",
    "author": "author",
    "text": "text",
    "timestamp": "timestamp",
    "platform": "platform",
    "resolved": "resolved",
    "feedback": "feedback",
    "intent": "intent",
}

ROLE_ALIASES: Mapping[str, Speaker | None] = {
    **dict.fromkeys(
        ("customer", "user", "client", "end-user", "enduser", "requester"), Speaker.CUSTOMER
    ),
    **dict.fromkeys(("agent", "support", "staff", "human", "operator", "admin"), Speaker.AGENT),
    **dict.fromkeys(("bot", "assistant", "ai", "virtual_agent"), Speaker.BOT),
    **dict.fromkeys(("system", "event", "notice"), None),
}
_TRUE = frozenset({"true", "yes", "1", "y", "resolved", "solved"})
_FALSE = frozenset({"false", "no", "0", "n", "open", "unresolved"})
_UP = frozenset({"up", "👍", "+1", "good", "positive"})
_DOWN = frozenset({"down", "👎", "-1", "bad", "negative"})


def load_csv(path: Path, options: ImportOptions) -> ImportResult:
    """Read a CSV chat log (a header row, then one message a row)."""
    text = _text(path)
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise TrainingDataError("empty CSV: expected a header row", path)
    rows = ((number, dict(row)) for number, row in enumerate(reader, 2))
    return _build(path, rows, options)


def load_jsonl(path: Path, options: ImportOptions) -> ImportResult:
    """Read a JSONL chat log (one JSON object, one message, a line)."""

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"line {number} is not JSON: {exc.msg}", path) from exc
            if not isinstance(value, dict):
                raise TrainingDataError(f"line {number}: expected a JSON object", path)
            yield number, value

    return _build(path, rows(), options)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise TrainingDataError("no such file", path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"cannot read: {exc}", path) from exc


def _build(
    path: Path, rows: Iterator[tuple[int, dict[str, Any]]], options: ImportOptions
) -> ImportResult:
    columns = {**DEFAULT_COLUMNS, **options.columns}
    grouped: dict[str, list[tuple[int, Turn]]] = {}
    info: dict[str, dict[str, Any]] = {}
    dropped: Counter[str] = Counter()
    checked = False
    for number, row in rows:
        if not checked:
            missing = [
                columns[key]
                for key in ("conversation_id", "role", "text")
                if columns[key] not in row
            ]
            if missing:
                raise TrainingDataError(
                    f"line {number}: no column(s) {', '.join(missing)}; name them with "
                    "--column FIELD=COLUMN (fields: conversation_id, role, author, text, "
                    "timestamp)",
                    path,
                )
            checked = True
        conversation_id = str(row.get(columns["conversation_id"]) or "").strip()
        raw_role = str(row.get(columns["role"]) or "").strip().lower()
        if not conversation_id:
            dropped["no_conversation_id"] += 1
            continue
        if raw_role not in ROLE_ALIASES:
            raise TrainingDataError(
                f"line {number}: unknown role {raw_role!r}; use one of customer, agent, bot "
                "(or user, assistant, support, system)",
                path,
            )
        role = ROLE_ALIASES[raw_role]
        if role is None:
            dropped["system"] += 1
            continue
        author = str(row.get(columns["author"]) or role.value)
        if author in options.agents:
            role = Speaker.AGENT
        elif author in options.bots:
            role = Speaker.BOT
        meta: dict[str, Any] = {"line": number}
        feedback = str(row.get(columns["feedback"]) or "").strip().lower()
        if feedback in _UP:
            meta["feedback"] = "up"
        elif feedback in _DOWN:
            meta["feedback"] = "down"
        turn = Turn(
            role,
            author,
            str(row.get(columns["text"]) or ""),
            parse_time(row.get(columns["timestamp"])),
            meta,
        )
        grouped.setdefault(conversation_id, []).append((number, turn))
        details = info.setdefault(conversation_id, {})
        if row.get(columns["platform"]):
            details["platform"] = str(row[columns["platform"]])
        resolved = str(row.get(columns["resolved"]) or "").strip().lower()
        if resolved in _TRUE:
            details["resolved"] = True
        elif resolved in _FALSE:
            details.setdefault("resolved", False)
        if row.get(columns["intent"]):
            details["intent"] = str(row[columns["intent"]])
    conversations = []
    for conversation_id, numbered in grouped.items():
        turns = [turn for _, turn in numbered]
        if all(t.time is not None for t in turns):
            turns.sort(key=lambda t: t.time)  # type: ignore[arg-type,return-value]
        details = info[conversation_id]
        ratings = [t.meta.get("feedback") for t in turns]
        conversations.append(
            Conversation(
                id=f"{path.stem}:{conversation_id}",
                source=str(path),
                platform=details.get("platform", options.platform),
                turns=tuple(turns),
                signals=Signals(
                    resolved=details.get("resolved"),
                    thumbs_up=ratings.count("up"),
                    thumbs_down=ratings.count("down"),
                    handed_off=any(t.role is Speaker.BOT for t in turns)
                    and any(t.role is Speaker.AGENT for t in turns),
                    intent=details.get("intent"),
                ),
            )
        )
    logger.info("chat log %s: %d conversations", path, len(conversations))
    # Authors given by name are people to mask wherever the text names them.
    people = People.build(
        (t.author, [t.author])
        for c in conversations
        for t in c.turns
        if t.author and t.author != t.role.value and not t.author.isdigit()
    )
    return ImportResult(tuple(conversations), people, dict(dropped))
