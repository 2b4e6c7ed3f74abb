"""The bot in Discord servers and DMs, through discord.py's gateway client.

`supportbot discord` calls `run`: one process holding the gateway connection, sharing the engine,
knowledge base and database with the web process. See docs/discord.md.

Modules: `settings` (environment), `payloads` (wire shapes), `convert` (pure: Discord → model),
`render` (pure: model → Discord messages), `client` (the discord.py client).
"""

from __future__ import annotations

import asyncio
import contextlib

from adapters.discord.client import (
    AgentReplyHandler,
    SupportBotClient,
    build_client,
    discord_endpoints,
    serve,
)
from adapters.discord.convert import AgentReply
from adapters.discord.render import HandoffCard
from adapters.discord.settings import DiscordSettings, load_discord_settings
from bot.engine import Engine

__all__ = [
    "AgentReply",
    "AgentReplyHandler",
    "DiscordSettings",
    "HandoffCard",
    "SupportBotClient",
    "build_client",
    "discord_endpoints",
    "load_discord_settings",
    "run",
    "serve",
]


def run(settings: DiscordSettings, engine: Engine) -> None:
    """Run the Discord bot until interrupted (Ctrl-C stops it cleanly)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, engine))
