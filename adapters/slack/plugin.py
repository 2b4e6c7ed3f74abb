"""The ``supportbot.adapters`` entry point (`mount`), which the web app calls on every start.

It reads the Slack settings first and imports the adapter only when Slack is configured: the
adapter brings slack-bolt, whose import took 0.45 s of every worker's start-up, with Slack or
without (docs/benchmarks.md, "Twelfth round").
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from adapters.slack.settings import SlackMode, SlackSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bot.service import Services

logger = logging.getLogger(__name__)


def mount(
    app: FastAPI, services: Services, *, settings: SlackSettings | None = None
) -> AbstractAsyncContextManager[None] | None:
    """Mount Slack when it is configured.

    Args:
        app: the bot's web app.
        services: the bot's services.
        settings: Slack settings; read from the environment when None.

    Returns:
        The adapter's lifetime, or None when no Slack setting is present.

    Raises:
        ConfigError: Slack settings are present but cannot work; the message says how to fix them.
    """
    settings = settings or SlackSettings.from_env()
    if settings.mode is SlackMode.OFF:
        return None
    from adapters.slack.app import SlackAdapter

    adapter = SlackAdapter(services, settings)
    app.state.slack = adapter
    logger.info("Slack adapter mounted (%s mode)", adapter.mode)
    return adapter.attach(app)
