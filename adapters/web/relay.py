"""The web chat's side of the human-handoff relay (`bot.relay`): its customers.

A web page cannot be pushed to: it asks. `WebCustomerChannel` is the relay's `CustomerChannel`
for conversations on the web chat; delivering a message to it is the relay marking the queued
row sent in the shared database once `post` returns, which is what makes the message visible to
the page (`GET /api/chat/{conversation_id}/messages` lists the conversation's delivered rows). The
relay has already stored an agent's reply (as an `agent` message) and its own notices in the
conversation when it queued them, so nothing is stored twice. Posting is thus idempotent by the
row itself (its `post_id`): a claim taken again after a process died shows the row once.

`web_relay` runs, for the web app's lifetime, the relay's delivery loop for the web platform
(which also checks the handoff timeouts), with the channel registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from adapters.web.convert import PLATFORM
from bot.model import ConversationKey
from bot.relay import Relay

__all__ = ["WebCustomerChannel", "web_relay"]

logger = logging.getLogger(__name__)


class WebCustomerChannel:
    """Web chat customers, seen from the relay: the page fetches what was delivered.

    Contract (`CustomerChannel`): `post` accepts web conversations and returns None (the page's
    message has no platform id, and nothing the relay posts can come back as a customer's
    message); it raises `ValueError` for another platform's conversation, a wiring error.
    """

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        if key.platform != PLATFORM:
            raise ValueError(f"the web chat cannot post to a {key.platform} conversation")
        logger.debug("relay: message for web conversation %s ready for the page", key.channel)
        return None


def web_relay(relay: Relay) -> AbstractAsyncContextManager[None]:
    """Serve the web chat's customers in `relay` and run its delivery loop while the app runs."""
    relay.register_channel(PLATFORM, WebCustomerChannel())

    @asynccontextmanager
    async def lifetime() -> AsyncIterator[None]:
        task = asyncio.create_task(relay.run((PLATFORM,)), name="web-relay")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifetime()
