"""A whole bot for tests: the bot's services on a fresh SQLite file and a copy of the sample index.

Test modules build one with `sample_services` inside their own ``services`` fixture, so each
module keeps its own database and settings while the model, loaded once per session, is shared.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.handoff import HandoffSink
from bot.service import Services, build_services
from bot.settings import Settings

__all__ = ["sample_services"]


@contextmanager
def sample_services(
    root: Path,
    sample_kb_dir: Path,
    embedder: object,
    *,
    handoff_sink: HandoffSink | None = None,
    **settings: Any,
) -> Iterator[Services]:
    """Services with their data folder under `root` (the sample index copied into it).

    Args:
        root: an empty folder; the data folder is ``root/data``.
        sample_kb_dir: the session's built sample index (the `sample_kb_dir` fixture).
        embedder: the session's loaded model (the `embedder` fixture): the index's fingerprint
            check passes with the same weights, and swapping it in spares loading them again.
        handoff_sink: where handoffs go, when the test records them itself.
        settings: `Settings` fields besides the data folder.
    """
    data = root / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    built = build_services(Settings(data_dir=data, **settings), handoff_sink=handoff_sink)
    built.kb.embedder = embedder  # type: ignore[assignment]
    try:
        yield built
    finally:
        built.store.close()
