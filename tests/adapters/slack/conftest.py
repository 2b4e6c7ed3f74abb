"""Fixtures for the Slack adapter: a local Slack, the real web app on uvicorn, signed requests.

Every test gets its own SQLite database; the sample knowledge base and the embedding model are
loaded once per session. The web app is the project's own `create_app` with the Slack adapter
mounted, served by uvicorn on a free port of 127.0.0.1; the adapter's Web API client points at
the emulator.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn

from adapters.slack import SlackAdapter, SlackSettings
from bot.app import create_app
from bot.engine import Engine, Responder
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from policies.config import PolicyConfig
from tests.adapters.slack.emulator import SlackEmulator
from tests.adapters.slack.emulator import signature_headers as sign

# The PostgreSQL fixtures of the storage tests (a fresh database per session, dropped after).
from tests.storage.conftest import postgres_database, postgres_url, sqlite_url  # noqa: F401

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "8f742231b10e8888abc1a2b3c4d5e6f7"
BOT_TOKEN = "xoxb-0000-test"
APP_TOKEN = "xapp-1-A0TEST-1-abcdef"
AUTO_CHANNEL = "C0AUTO"
AGENTS_CHANNEL = "C0AGENTS"


def payload(name: str) -> dict[str, Any]:
    """A recorded payload from ``payloads/``, as a fresh dict to change freely."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text("utf-8"))
    return copy.deepcopy(data)


def signature_headers(
    body: bytes, *, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers Slack sends (`emulator.signature_headers`), with the tests' secret by default."""
    return sign(body, secret, timestamp=timestamp)


def make_settings(emulator: SlackEmulator, **overrides: Any) -> SlackSettings:
    """Single-workspace settings against the emulator, with short timings."""
    values: dict[str, Any] = {
        "bot_token": BOT_TOKEN,
        "signing_secret": SECRET,
        "api_url": emulator.api_url,
        "auto_answer_channels": [AUTO_CHANNEL],
        "agents_channel": AGENTS_CHANNEL,
        "http_timeout": 3.0,
        "lease_ttl": 1.0,
        "lease_renew": 0.2,
        "shutdown_grace": 5.0,
    }
    values.update(overrides)
    return SlackSettings(**values)


@pytest.fixture(autouse=True)
def _no_slack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set every Slack setting themselves: none may come from the caller's shell."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SUPPORTBOT_SLACK_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def slack_kb(sample_kb_dir: Path, embedder: Any) -> KnowledgeBase:
    return KnowledgeBase(sample_kb_dir, embedder).load()


#: A short burst window keeps one-message tests fast; burst tests send within it.
TEST_BURST_WINDOW_S = 0.05


def short_policies(**turn_taking: Any) -> PolicyConfig:
    """The bundled policies with a short burst window (and any other turn-taking changes)."""
    data: dict[str, Any] = {"burst_window_seconds": TEST_BURST_WINDOW_S, **turn_taking}
    return PolicyConfig.from_mapping({"turn_taking": data}, "tests")


def build_test_services(
    db_url: str, data_dir: Path, kb: KnowledgeBase, *, policies: PolicyConfig | None = None
) -> Services:
    store = Store.from_url(db_url)
    retriever = Retriever(kb)
    engine = Engine(
        store, Responder(retriever, confidence_model(kb)), policies=policies or short_policies()
    )
    return Services(Settings(data_dir=data_dir), store, kb, retriever, engine)


@pytest.fixture
def services(tmp_path: Path, slack_kb: KnowledgeBase) -> Iterator[Services]:
    """Real services on an empty SQLite database, sharing the session's knowledge base."""
    built = build_test_services(f"sqlite:///{tmp_path / 'slack.db'}", tmp_path, slack_kb)
    try:
        yield built
    finally:
        built.store.close()


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    slack = SlackEmulator()
    await slack.start()
    try:
        yield slack
    finally:
        await slack.stop()


@pytest.fixture
def slack_settings(emulator: SlackEmulator) -> SlackSettings:
    return make_settings(emulator)


@dataclass
class Harness:
    """The running web app with the Slack adapter, and ways to talk to it like Slack does."""

    adapter: SlackAdapter
    http: httpx.AsyncClient
    emulator: SlackEmulator
    services: Services

    async def send(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
        signed: bool = True,
        content_type: str = "application/json",
    ) -> httpx.Response:
        """POST an Events API request to /slack/events, signed unless told otherwise."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": content_type}
        if signed:
            sent.update(signature_headers(raw, secret=secret, timestamp=timestamp))
        sent.update(headers or {})
        return await self.http.post("/slack/events", content=raw, headers=sent)

    async def click(self, body: dict[str, Any]) -> httpx.Response:
        """POST an interactivity payload the way Slack does (a form with ``payload=``)."""
        raw = urlencode({"payload": json.dumps(body)}).encode()
        return await self.send(raw, content_type="application/x-www-form-urlencoded")

    async def settle(self) -> None:
        """Wait until the work started by the requests sent so far is done."""
        await self.adapter.drain(15)

    def counts(self) -> dict[str, int]:
        return self.services.store.counts()


@asynccontextmanager
async def serve(
    services: Services, settings: SlackSettings, emulator: SlackEmulator
) -> AsyncIterator[Harness]:
    """Run `create_app` with this Slack adapter on uvicorn (lifespan included)."""
    adapter = SlackAdapter(services, settings)
    app = create_app(services, adapters={"slack": lambda app, _services: adapter.attach(app)})
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Harness(adapter, http, emulator, services)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def slack(
    services: Services, slack_settings: SlackSettings, emulator: SlackEmulator
) -> AsyncIterator[Harness]:
    async with serve(services, slack_settings, emulator) as harness:
        yield harness
