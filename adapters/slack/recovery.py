"""Slack's side of the inbox and the reply outbox (`bot.outbox`).

`SlackReplySender` sends a reply that its process stored but never recorded as posted: it looks
in the thread (or the DM) for a message whose metadata carries the reply id (`find_posted`) and
posts only when there is none, so a reply posted just before its process died is not posted
twice. `SlackInbox` answers an event that a process acknowledged and recorded in the inbox but
never answered: it runs the turn as a redelivery and posts the replies as the live path does.

Both post with the client of the reply's or message's workspace (`ClientFor`): the adapter's one
client with a single bot token, the workspace's installation's token in OAuth mode
(`installation.WorkspaceClients`). A workspace without an installation raises
`NotInstalledError` before anything is posted or answered, so the sweeper logs it, tries again
and in the end gives the row up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import convert, render
from adapters.slack.convert import PLATFORM, Route
from adapters.slack.outbound import ClientFor, find_posted, post_once
from bot.engine import Engine
from bot.model import InboundMessage, Reply
from bot.outbox import Destination, inbound_to_json

__all__ = ["SlackInbox", "SlackReplySender", "inbox_payload"]

logger = logging.getLogger(__name__)

PostReply = Callable[[AsyncWebClient, InboundMessage, Reply], Awaitable[None]]
"""Posts one reply answering a message with a client and records it as posted (the adapter's
live path, `SlackAdapter._post_reply`)."""


def inbox_payload(message: InboundMessage, route: Route) -> dict[str, Any]:
    """What the inbox keeps of a Slack event: the message and how it was routed."""
    return {"message": inbound_to_json(message), "extra": {"route": route.value}}


class SlackReplySender:
    """Sends unsent Slack replies again, exactly once (`bot.outbox.ReplySender`).

    Args:
        clients: the Web API client of a destination's workspace.
    """

    platform = PLATFORM

    def __init__(self, clients: ClientFor) -> None:
        self.clients = clients

    async def resend(self, reply: Reply, destination: Destination) -> str:
        """Post `reply` in its thread unless a copy is there already; ``"{channel}:{ts}"``.

        Raises:
            NotInstalledError: the destination's workspace has no installation (OAuth mode).
        """
        client = await self.clients(destination.workspace)
        thread_ts = destination.thread or None
        found = await find_posted(
            client, channel=destination.channel, thread_ts=thread_ts, reply_id=reply.id
        )
        if found:
            logger.info("reply %s was posted before (ts %s): not posted again", reply.id, found)
            return convert.platform_ref(destination.channel, found)
        ts = await post_once(
            client,
            channel=destination.channel,
            thread_ts=thread_ts,
            message=render.reply_message(reply),
            reply_id=reply.id,
        )
        return convert.platform_ref(destination.channel, ts)


class SlackInbox:
    """Answers Slack events acknowledged by a process that died (`bot.outbox.InboxHandler`).

    Args:
        engine: the engine running the turn.
        clients: the Web API client of a message's workspace.
        post: posts a reply and records it as posted (`SlackAdapter._post_reply`).
    """

    platform = PLATFORM

    def __init__(self, engine: Engine, clients: ClientFor, post: PostReply) -> None:
        self.engine = engine
        self.clients = clients
        self.post = post

    async def redeliver(self, message: InboundMessage, extra: Mapping[str, Any]) -> None:
        """Run the turn for `message` again (a redelivery) and post its replies.

        Raises:
            NotInstalledError: the message's workspace has no installation (OAuth mode); raised
                before the turn runs, so nothing is answered that cannot be posted.
        """
        route = Route(str(extra.get("route", Route.ANSWER.value)))
        if route is Route.IF_IN_THREAD and not await asyncio.to_thread(
            self.engine.takes_part_in, message.conversation
        ):
            return
        client = await self.clients(message.workspace)
        replies = await asyncio.to_thread(self.engine.handle_burst, [message], redelivered=True)
        for reply in replies:
            await self.post(client, message, reply)
