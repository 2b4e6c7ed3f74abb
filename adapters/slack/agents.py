"""The agents' side: handoff cards in the agents' channel, and agents' replies under them.

`post_handoff_card` posts a card (customer, platform, question, what the bot tried, sources,
transcript) and returns its reference ``"{channel}:{ts}"``. Agents answer in the card's thread;
the adapter passes each such message (never the bot's own posts) to the callbacks registered with
`SlackAdapter.on_agent_reply` as an `AgentReply` whose ``card_ref`` is that reference. Relaying the
reply to the customer belongs to whoever registered the callback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import AgentReply, platform_ref
from adapters.slack.outbound import post_once
from adapters.slack.render import HandoffCard, handoff_card

__all__ = ["AgentReply", "AgentReplyCallback", "HandoffCard", "post_handoff_card"]

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
