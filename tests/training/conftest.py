"""Fixtures of the training-data tests: the hand-written exports in `data/`.

The exports follow the documented shapes of a Slack workspace export, a DiscordChatExporter JSON
file, a Zendesk ticket export (tickets with comments, users side-loaded) and generic CSV/JSONL
chat logs. `data/planted_pii.json` lists every personal value planted in them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.importers import ImportOptions, ImportResult, load_source

DATA = Path(__file__).resolve().parent / "data"
ZENDESK_BOT = "7002"


def load_all() -> ImportResult:
    """Every fixture export, imported."""
    result = load_source("slack", DATA / "slack_export")
    for fmt, source, options in (
        ("discord", DATA / "discord", ImportOptions()),
        (
            "zendesk",
            DATA / "zendesk" / "tickets.json",
            ImportOptions(bots=frozenset({ZENDESK_BOT})),
        ),
        ("csv", DATA / "chat_log.csv", ImportOptions(platform="web")),
        ("jsonl", DATA / "chat_log.jsonl", ImportOptions(platform="app")),
    ):
        result = result.merge(load_source(fmt, source, options))
    return result


@pytest.fixture(scope="session")
def imported() -> ImportResult:
    return load_all()


@pytest.fixture(scope="session")
def planted() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "planted_pii.json").read_text(encoding="utf-8"))
    return data
