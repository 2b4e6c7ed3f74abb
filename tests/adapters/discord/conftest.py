"""Fixtures: a local fake Discord, real services (sample knowledge base), the bot against both.

The knowledge base and model are loaded once per module; every test gets its own database.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import build_client, discord_endpoints
from adapters.discord.client import SupportBotClient
from adapters.discord.settings import DiscordSettings
from bot.engine import Engine
from bot.service import Services, build_services
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.embeddings import Embedder
from policies.config import PolicyConfig
from tests.adapters.discord.fake_discord import TOKEN, FakeDiscord

#: Every wait in these tests is bounded by this many seconds.
WAIT = 10.0
#: A short burst window keeps one-message tests fast; burst tests send within it or use a
#: `ManualClock`.
TEST_BURST_WINDOW_S = 0.05


def short_policies(**turn_taking: Any) -> PolicyConfig:
    """The bundled policies with a short burst window (and any other turn-taking changes)."""
    data: dict[str, Any] = {"burst_window_seconds": TEST_BURST_WINDOW_S, **turn_taking}
    return PolicyConfig.from_mapping({"turn_taking": data}, "tests")


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: Embedder
) -> Services:
    data = tmp_path_factory.mktemp("discord-data")
    shutil.copytree(sample_kb_dir, data / "index")
    return build_services(Settings(data_dir=data), embedder=embedder)


@pytest.fixture
def engine(services: Services, tmp_path: Path) -> Iterator[Engine]:
    """The real engine on the sample knowledge base, with a fresh database for this test."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'discord.db'}")
    yield Engine(store, services.engine.responder, policies=short_policies())
    store.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


def discord_settings(fake: FakeDiscord, **overrides: Any) -> DiscordSettings:
    values: dict[str, Any] = {
        "token": TOKEN,
        "support_channels": (fake.support_channel,),
        "forum_channels": (fake.forum_channel,),
        "agents_channel": fake.agents_channel,
        "api_url": fake.api_url,
        "gateway_url": None,
    }
    values.update(overrides)
    return DiscordSettings(**values)


@asynccontextmanager
async def running(
    fake: FakeDiscord, engine: Engine, **overrides: Any
) -> AsyncIterator[SupportBotClient]:
    """The real discord.py client, connected to `fake` until the block ends."""
    settings = discord_settings(fake, **overrides)
    client = build_client(settings, engine, guild_ready_timeout=0.05)
    with discord_endpoints(settings.api_url, settings.gateway_url):
        task = asyncio.create_task(client.start(TOKEN))
        try:
            await asyncio.wait_for(client.wait_until_ready(), WAIT)
            yield client
        finally:
            await asyncio.wait_for(client.close(), WAIT)
            await asyncio.wait_for(task, WAIT)


@pytest.fixture
def bot(
    fake: FakeDiscord, engine: Engine
) -> Callable[..., AbstractAsyncContextManager[SupportBotClient]]:
    """`async with bot(**settings) as client:` runs the bot against the fake Discord."""

    def start(**overrides: Any) -> AbstractAsyncContextManager[SupportBotClient]:
        return running(fake, engine, **overrides)

    return start
