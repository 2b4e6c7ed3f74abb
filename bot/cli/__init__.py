"""The `supportbot` command line.

One module per group of commands, all registered on the Typer app of `bot.cli.common`:

* `bot.cli.serve`: `run` (one process or ``--workers N``), `chat`, `discord`, `rasa-actions`;
* `bot.cli.kb`: `kb ingest|stats|calibrate`, `eval`, `data import-intents`;
* `bot.cli.quality`: `report`, `gaps`, `review list|mark`, `qa`, `prompts check`;
* `bot.cli.train`: `train`, `data prepare`, `kb proposals mine|list|approve|reject`.

Heavy modules (torch, sentence-transformers, FAISS) are imported inside the commands that need
them, so `supportbot --help` answers at once.
"""

from __future__ import annotations

# Imported for their commands, in the order `supportbot --help` lists them.
# isort: off
from bot.cli import serve, kb, quality, train  # noqa: F401

# isort: on
from bot.cli.common import app, main

__all__ = ["app", "main"]
