"""The ``supportbot.adapters`` entry point (`mount`), which the web app calls on every start.

It reads the Zendesk settings first and imports the adapter only when Zendesk is configured:
the adapter brings zenpy and the rest, whose import took 0.13–0.18 s of every worker's
start-up, with Zendesk or without (docs/benchmarks.md, "Twelfth round").
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from adapters.zendesk.settings import ZendeskSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bot.service import Services

logger = logging.getLogger(__name__)


def mount(
    app: FastAPI, services: Services, *, settings: ZendeskSettings | None = None
) -> AbstractAsyncContextManager[None] | None:
    """Mount Zendesk when it is configured.

    Args:
        app: the bot's web app.
        services: the bot's services.
        settings: Zendesk settings; read from the environment when None.

    Returns:
        The adapter's lifetime (the satisfaction poll), or None when Zendesk is not configured.
        The adapter itself is ``app.state.zendesk`` (for `on_agent_comment`, `create_ticket_for`,
        `hand_off`).

    Raises:
        ConfigError: Zendesk settings are present but cannot work; the message says how to fix
            them.
    """
    settings = settings or ZendeskSettings.from_env()
    if not settings.configured:
        return None
    from adapters.zendesk.adapter import ZendeskAdapter
    from adapters.zendesk.routes import webhook_router

    adapter = ZendeskAdapter(services, settings)
    app.state.zendesk = adapter
    app.include_router(webhook_router(adapter))
    logger.info("Zendesk adapter mounted for %s", adapter.workspace)
    return adapter.lifetime()
