"""Importers: one module per source, each a pure function, and a registry by format name.

load_source("slack", "export.zip")        # Slack workspace export (folder or zip)
load_source("discord", "channel.json")    # DiscordChatExporter JSON (file or folder)
load_source("zendesk", "tickets.json")    # Zendesk tickets with comments
load_source("csv", "log.csv") / ("jsonl", "log.jsonl")   # generic chat logs
load_source("db", "sqlite:///.supportbot/supportbot.db")  # the bot's own conversations
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from training.errors import TrainingDataError
from training.importers.base import ImportOptions, ImportResult, People
from training.importers.discord import load_discord
from training.importers.slack import load_slack
from training.importers.tabular import load_csv, load_jsonl
from training.importers.zendesk import load_zendesk

__all__ = ["FORMATS", "IMPORTERS", "ImportOptions", "ImportResult", "People", "load_source"]


def _load_db(source: str, options: ImportOptions) -> ImportResult:
    # Imported here: only this format needs the database layer.
    from bot.storage.store import Store
    from training.importers.database import load_store

    url = source if "://" in source else f"sqlite:///{Path(source).resolve()}"
    if "://" not in source and not Path(source).exists():
        raise TrainingDataError(
            "no such database file; give a database URL (postgresql+psycopg://...) or the "
            "SQLite file the bot writes (.supportbot/supportbot.db)",
            source,
        )
    store = Store.from_url(url, migrate=True)
    try:
        return load_store(store, "db")
    finally:
        store.close()


def _file(
    load: Callable[[Path, ImportOptions], ImportResult],
) -> Callable[[str, ImportOptions], ImportResult]:
    def run(source: str, options: ImportOptions) -> ImportResult:
        path = Path(source)
        if not path.exists():
            raise TrainingDataError("no such file or folder", path)
        return load(path, options)

    run.__doc__ = load.__doc__
    return run


IMPORTERS: Mapping[str, Callable[[str, ImportOptions], ImportResult]] = MappingProxyType(
    {
        "slack": _file(load_slack),
        "discord": _file(load_discord),
        "zendesk": _file(load_zendesk),
        "csv": _file(load_csv),
        "jsonl": _file(load_jsonl),
        "db": _load_db,
    }
)
"""Format name → importer (a source string and options in, conversations out)."""

FORMATS: tuple[str, ...] = tuple(IMPORTERS)


def load_source(fmt: str, source: str | Path, options: ImportOptions | None = None) -> ImportResult:
    """Read one export with the importer for `fmt`.

    Raises:
        TrainingDataError: unknown format, or the export cannot be read.
    """
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise TrainingDataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return importer(str(source), options or ImportOptions())
