"""Calls to the Slack Web API: the client, and posting a reply exactly once.

The client honours ``429 Retry-After`` and retries failed connection attempts (slack_sdk retry
handlers). `post_once` retries what those leave over, a bounded number of times with backoff:
rate limits that outlast the client's retries, server errors (5xx) and timeouts. A post that
timed out or got a server error may still have reached Slack, so `post_once` never re-posts
blindly: before trying again it looks in the thread (``conversations.replies``) or the DM
(``conversations.history``) for a message whose metadata carries the reply id, and uses that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from aiohttp import ClientConnectorError, ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.render import METADATA_EVENT_TYPE, OutboundMessage
from adapters.slack.settings import SlackSettings

__all__ = ["ClientFor", "PostError", "find_posted", "fixed_client", "make_client", "post_once"]

logger = logging.getLogger(__name__)

#: How often a post is tried in all (the first try and the retries after timeouts, server
#: errors and rate limits the client's own retries did not outlast).
POST_ATTEMPTS = 6
#: The first wait after a server error; it doubles with each try.
BACKOFF_S = 0.5
#: The longest wait between two tries (``Retry-After`` included).
MAX_WAIT_S = 30.0
#: Slack's error codes for its own failures (sent with HTTP 200 by some gateways).
SERVER_ERRORS = frozenset({"fatal_error", "internal_error", "service_unavailable"})
#: How far back a DM is searched for an earlier copy of a post.
HISTORY_LOOKBACK = 50

ClientFor = Callable[[str], Awaitable[AsyncWebClient]]
"""The Web API client of a workspace (team id), for work outside an event (the outbox sweeper,
the relay); raises when there is none (`installation.NotInstalledError`)."""


class PostError(Exception):
    """A message could not be posted to Slack.

    Attributes:
        channel: where it was to go.
        reply_id: the reply it carried ("" for none).
    """

    def __init__(self, message: str, *, channel: str, reply_id: str) -> None:
        super().__init__(message)
        self.channel = channel
        self.reply_id = reply_id


def make_client(settings: SlackSettings, token: str | None = None) -> AsyncWebClient:
    """A Web API client for ``settings.api_url`` with the rate-limit and connection retries.

    Args:
        settings: the adapter's settings (base URL, timeout).
        token: the bot token, where there is one workspace.
    """
    return AsyncWebClient(
        token=token,
        base_url=settings.api_url,
        # aiohttp takes fractional seconds; the SDK only annotates the value as int.
        timeout=cast(int, settings.http_timeout),
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            # Only failures to connect, which prove nothing was sent. The SDK's default list
            # includes timeouts and dropped connections, after which a post may have arrived:
            # `post_once` retries those itself, looking for the earlier copy first.
            AsyncConnectionErrorRetryHandler(max_retry_count=2, error_types=[ClientConnectorError]),
        ],
    )


def fixed_client(client: AsyncWebClient) -> ClientFor:
    """The same client for every workspace (a single bot token)."""

    async def client_for(workspace: str) -> AsyncWebClient:
        return client

    return client_for


def _carries(message: Mapping[str, Any], reply_id: str) -> bool:
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != METADATA_EVENT_TYPE:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, Mapping) and payload.get("reply_id") == reply_id


async def find_posted(
    client: AsyncWebClient, *, channel: str, thread_ts: str | None, reply_id: str
) -> str | None:
    """The ts of a message already posted for ``reply_id`` in the thread (or the DM), or None."""
    if thread_ts:
        response = await client.conversations_replies(
            channel=channel, ts=thread_ts, include_all_metadata=True, limit=200
        )
    else:
        response = await client.conversations_history(
            channel=channel, include_all_metadata=True, limit=HISTORY_LOOKBACK
        )
    messages: Sequence[Mapping[str, Any]] = response.get("messages") or []
    for message in messages:
        if _carries(message, reply_id):
            ts = message.get("ts")
            return str(ts) if ts else None
    return None


def _retry_wait(error: SlackApiError, attempt: int) -> float | None:
    """How long to wait before posting again after Slack answered with an error, or None when
    trying again cannot help (the message itself was refused)."""
    response = error.response
    status = response.status_code
    code = response.get("error") if isinstance(response.data, dict) else None
    if status == 429 or code == "ratelimited":
        header = (response.headers or {}).get("Retry-After") or (response.headers or {}).get(
            "retry-after"
        )
        try:
            wait = float(header) if header is not None else BACKOFF_S * 2**attempt
        except (TypeError, ValueError):
            wait = BACKOFF_S * 2**attempt
        return min(max(wait, 0.0), MAX_WAIT_S)
    if status >= 500 or code in SERVER_ERRORS:
        return float(min(BACKOFF_S * 2**attempt, MAX_WAIT_S))
    return None


async def post_once(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str | None,
    message: OutboundMessage,
    reply_id: str = "",
    attempts: int = POST_ATTEMPTS,
) -> str:
    """Post a message and return its ts, retrying failures without ever posting it twice.

    A rate limit (429, after the client's own retries) is waited out (``Retry-After``) and
    tried again: Slack posted nothing. A server error (5xx) or a timeout may come after the
    message was posted, so before trying again the thread (or DM) is searched for a copy
    carrying ``reply_id``; without a reply id only rate limits are retried.

    Args:
        client: the workspace's Web API client.
        channel: the channel (or DM) id.
        thread_ts: the thread to post in; None for the top level.
        message: text, blocks and metadata.
        reply_id: the reply the message carries; without one a timed-out post is not retried,
            as there is no way to tell whether it arrived.
        attempts: tries in all.

    Raises:
        PostError: every try failed, or Slack refused the message.
    """
    last: Exception | None = None
    may_have_arrived = False
    tries = 0
    for attempt in range(max(1, attempts)):
        tries = attempt + 1
        if may_have_arrived:
            try:
                found = await find_posted(
                    client, channel=channel, thread_ts=thread_ts, reply_id=reply_id
                )
            except (SlackApiError, ClientError, TimeoutError) as e:
                logger.warning("cannot check whether reply %s was posted: %s", reply_id, e)
                found = None
            if found:
                logger.info("reply %s was posted before the error (ts %s)", reply_id, found)
                return found
        try:
            response = await client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=message.text,
                blocks=list(message.blocks),  # type: ignore[arg-type]
                metadata=dict(message.metadata) if message.metadata else None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as e:
            wait = _retry_wait(e, attempt)
            status = e.response.status_code
            rate_limited = wait is not None and status == 429
            if wait is None or (not reply_id and not rate_limited):
                raise PostError(
                    f"Slack refused the message: {e.response.get('error') or status}",
                    channel=channel,
                    reply_id=reply_id,
                ) from e
            logger.warning(
                "posting reply %s to %s: Slack answered %s (try %d of %d); trying again in %.1fs",
                reply_id or "-",
                channel,
                status,
                attempt + 1,
                attempts,
                wait,
            )
            last = e
            may_have_arrived = may_have_arrived or not rate_limited
            if attempt + 1 < attempts:
                await asyncio.sleep(wait)
            continue
        except (ClientError, TimeoutError) as e:
            logger.warning(
                "posting reply %s to %s failed (try %d of %d): %r",
                reply_id or "-",
                channel,
                attempt + 1,
                attempts,
                e,
            )
            last = e
            if not reply_id:
                break
            may_have_arrived = True
            continue
        return str(response["ts"])
    raise PostError(
        f"could not post to {channel} after {tries} tries: {last!r}",
        channel=channel,
        reply_id=reply_id,
    ) from last
