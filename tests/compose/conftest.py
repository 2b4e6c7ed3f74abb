"""Fixtures for the composer tests: the fake model server and a bot on the sample KB."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.service import Services, build_services
from bot.settings import Settings
from tests.compose.fake_llm import FakeLLM


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    """The fake server with an empty request record."""
    fake_llm.requests.clear()
    return fake_llm


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    """A whole bot (SQLite, the sample KB, the real model); composers are set per test."""
    data = tmp_path_factory.mktemp("compose") / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    built = build_services(Settings(data_dir=data), embedder=embedder)
    yield built
    built.store.close()
