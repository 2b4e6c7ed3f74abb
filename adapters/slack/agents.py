"""The agents' side: handoff cards in the agents' channel, and agents' replies under them.

`post_handoff_card` posts a card (customer, platform, question, what the bot tried, sources,
transcript) and returns its reference ``"{channel}:{ts}"``. Agents answer in the card's thread;
the adapter passes each such message (never the bot's own posts) to the callbacks registered with
`SlackAdapter.on_agent_reply` as an `AgentReply` whose ``card_ref`` is that reference. Relaying the
reply to the customer belongs to whoever registered the callback.

`AgentDirectory` says who counts as a human agent: the configured user ids, and (when asked for)
the members of the agents' channel, read with ``conversations.members`` and cached. An agent who
replies in a customer's thread takes the conversation over (`SlackAdapter`, `Engine.agent_wrote`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import AgentReply, platform_ref
from adapters.slack.outbound import post_once
from adapters.slack.render import HandoffCard, handoff_card

__all__ = [
    "AgentDirectory",
    "AgentReply",
    "AgentReplyCallback",
    "HandoffCard",
    "post_handoff_card",
]

logger = logging.getLogger(__name__)

#: After a failed read of the channel's members, try again this soon (seconds).
RETRY_AFTER_FAILURE_S = 30.0

#: Receives each agent reply posted in a handoff card's thread.
AgentReplyCallback = Callable[[AgentReply], Awaitable[None]]


async def post_handoff_card(client: AsyncWebClient, channel: str, card: HandoffCard) -> str:
    """Post a handoff card in the agents' channel.

    Args:
        client: a Web API client with a bot token of the agents' workspace.
        channel: the agents' channel id.
        card: what to show.

    Returns:
        The card's reference, ``"{channel}:{ts}"``; agents' replies name it as ``card_ref``.

    Raises:
        PostError: Slack refused the card or could not be reached.
    """
    ts = await post_once(client, channel=channel, thread_ts=None, message=handoff_card(card))
    return platform_ref(channel, ts)


class AgentDirectory:
    """Who counts as a human agent on Slack.

    Args:
        users: agent user ids from the settings (``SUPPORTBOT_SLACK_AGENT_USERS``).
        channel: the agents' channel whose members are agents too, or None.
        refresh_s: how long a read of the channel's members is used before the next one.
        clock: monotonic seconds (tests pass their own).

    `is_agent` never waits for Slack: it answers from the configured ids and the members read
    last. `refresh` reads the members again when they are older than ``refresh_s``; the adapter
    calls it at start-up and in the background. A failed read keeps the members read before.
    """

    def __init__(
        self,
        users: Collection[str],
        channel: str | None,
        *,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = frozenset(users)
        self.channel = channel
        self.refresh_s = refresh_s
        self._clock = clock
        self._members: frozenset[str] = frozenset()
        self._next_read: float | None = None

    @property
    def configured(self) -> bool:
        """Whether anybody can count as an agent."""
        return bool(self.users) or self.channel is not None

    @property
    def members(self) -> frozenset[str]:
        """The agents' channel's members as last read."""
        return self._members

    def is_agent(self, user: str) -> bool:
        """Whether `user` is a human agent (a configured id or a member of the agents' channel)."""
        return bool(user) and (user in self.users or user in self._members)

    async def refresh(self, client: AsyncWebClient, *, force: bool = False) -> bool:
        """Read the agents' channel's members, unless the last read is recent enough.

        Returns:
            Whether the members were read now.
        """
        if self.channel is None:
            return False
        now = self._clock()
        if not force and self._next_read is not None and now < self._next_read:
            return False
        try:
            members: set[str] = set()
            cursor: str | None = None
            while True:
                response = await client.conversations_members(
                    channel=self.channel, cursor=cursor, limit=200
                )
                members.update(str(m) for m in response.get("members") or ())
                metadata = response.get("response_metadata") or {}
                cursor = metadata.get("next_cursor") or None
                if not cursor:
                    break
        except (SlackApiError, ClientError, TimeoutError) as e:
            self._next_read = now + min(self.refresh_s, RETRY_AFTER_FAILURE_S)
            logger.warning(
                "cannot read the members of the agents' channel %s (%s): give the app the "
                "channels:read (or groups:read) scope, or list agents in "
                "SUPPORTBOT_SLACK_AGENT_USERS",
                self.channel,
                e,
            )
            return False
        self._members = frozenset(members)
        self._next_read = now + self.refresh_s
        logger.info("agents' channel %s: %d member(s)", self.channel, len(members))
        return True
