"""Slack's side of the human-handoff relay (`bot.relay`): the agents' desk and the customers.

`SlackDesk` opens handoff cards in the agents' channel and posts customers' messages in a card's
thread; `SlackCustomerChannel` posts agents' replies where the customer's conversation is (a DM,
a channel thread), with the client of the conversation's workspace (its own installation's token
in OAuth mode). `SlackAdapter` registers both with the relay and passes agents' replies under a
card to `Relay.agent_said`. The desk is one workspace's channel (the company's own): it needs a
single-workspace bot token.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.agents import post_handoff_card
from adapters.slack.outbound import ClientFor, post_once
from adapters.slack.render import HandoffCard, OutboundMessage, escape
from bot.handoff import HandoffRequest
from bot.model import ConversationKey

__all__ = ["SlackCustomerChannel", "SlackDesk", "card_for"]


def card_for(request: HandoffRequest) -> HandoffCard:
    """The agents' card of a handoff request."""
    tried = request.attempts[-1] if request.attempts else None
    return HandoffCard(
        customer=request.customer,
        platform=request.platform,
        question=request.question,
        tried=tried.text if tried else None,
        sources=tried.sources if tried else (),
        transcript=request.transcript,
        conversation=str(request.key),
    )


def _plain(text: str) -> OutboundMessage:
    # Relayed text is shown as written: escaped, so nobody is pinged by what someone typed.
    shown = escape(text)
    return OutboundMessage(shown, [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}])


class SlackDesk:
    """The agents' channel as the relay's desk; card references are ``"{channel}:{ts}"``."""

    def __init__(self, client: AsyncWebClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def open_card(self, request: HandoffRequest) -> str:
        return await post_handoff_card(self.client, self.channel, card_for(request))

    async def post(self, card_ref: str, text: str) -> str | None:
        channel, ts = card_ref.split(":", 1)
        return await post_once(self.client, channel=channel, thread_ts=ts, message=_plain(text))


class SlackCustomerChannel:
    """Customers' Slack conversations, seen from the relay.

    Args:
        clients: the Web API client of a conversation's workspace; a workspace without an
            installation raises, and the relay keeps the message queued for its next round.
    """

    def __init__(self, clients: ClientFor) -> None:
        self.clients = clients

    async def post(self, key: ConversationKey, text: str) -> str | None:
        client = await self.clients(key.workspace)
        return await post_once(
            client, channel=key.channel, thread_ts=key.thread or None, message=_plain(text)
        )
