"""Fixtures shared by every test package.

The real all-MiniLM-L6-v2 model is loaded once per session, and the bundled sample knowledge base
is built once per session into a temporary folder; tests that change a knowledge base copy it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
SAMPLE_QUERIES = REPO / "knowledge" / "sample" / "queries.jsonl"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may talk to 127.0.0.1 only."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
                raise OSError(f"network access to {host} is blocked in tests")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from knowledge.embeddings import Embedder

    model = Embedder()
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def sample_kb_dir(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:  # type: ignore[no-untyped-def]
    """The bundled sample knowledge base, built once (do not modify: copy it)."""
    from bot.service import ingest_paths
    from bot.settings import sample_kb_paths
    from knowledge.base import KnowledgeBase

    directory = tmp_path_factory.mktemp("sample-kb") / "index"
    ingest_paths(KnowledgeBase(directory, embedder), sample_kb_paths())
    return directory


@pytest.fixture
def sample_kb(sample_kb_dir: Path, embedder):  # type: ignore[no-untyped-def]
    from knowledge.base import KnowledgeBase

    return KnowledgeBase(sample_kb_dir, embedder).load()


@pytest.fixture
def kb_copy(sample_kb_dir: Path, tmp_path: Path, embedder) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """A private copy of the sample index folder, for tests that change it."""
    target = tmp_path / "index"
    shutil.copytree(sample_kb_dir, target)
    yield target


@pytest.fixture
def data_dir(tmp_path: Path, sample_kb_dir: Path) -> Path:
    """A data folder (SQLite + index) for a whole bot, with the sample index already in it."""
    target = tmp_path / "data"
    shutil.copytree(sample_kb_dir, target / "index")
    return target
