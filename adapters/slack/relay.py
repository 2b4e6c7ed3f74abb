"""Slack's side of the human-handoff relay (`bot.relay`): the agents' desk and the customers.

`SlackDesk` opens handoff cards in the agents' channel and posts customers' messages in a card's
thread; `SlackCustomerChannel` posts agents' replies where the customer's conversation is (a DM,
a channel thread), with the client of the conversation's workspace (its own installation's token
in OAuth mode). `SlackAdapter` registers both with the relay and passes agents' replies under a
card to `Relay.agent_said`. The desk is one workspace's channel (the company's own): it needs a
single-workspace bot token.

Every relayed message carries its relay post id in its metadata, as the bot's replies carry
their reply id, so `post_once` retries a timed-out post without doubling it, and a message
whose claim was taken again (its process died after posting, before recording it) is looked for
in the thread or DM first (`find_posted`) and not posted twice.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.agents import post_handoff_card
from adapters.slack.outbound import ClientFor, find_posted, post_once
from adapters.slack.render import METADATA_EVENT_TYPE, HandoffCard, OutboundMessage, escape
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


def _plain(text: str, post_id: str) -> OutboundMessage:
    # Relayed text is shown as written: escaped, so nobody is pinged by what someone typed.
    shown = escape(text)
    return OutboundMessage(
        shown,
        [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}],
        {"event_type": METADATA_EVENT_TYPE, "event_payload": {"reply_id": post_id}},
    )


async def _post_relayed(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str | None,
    text: str,
    post_id: str,
    retaken: bool,
) -> str:
    """Post a relayed message once: when an earlier try may have reached Slack, the copy it
    left (found by its metadata) is the message."""
    if retaken:
        found = await find_posted(client, channel=channel, thread_ts=thread_ts, reply_id=post_id)
        if found:
            return found
    return await post_once(
        client,
        channel=channel,
        thread_ts=thread_ts,
        message=_plain(text, post_id),
        reply_id=post_id,
    )


class SlackDesk:
    """The agents' channel as the relay's desk; card references are ``"{channel}:{ts}"``."""

    def __init__(self, client: AsyncWebClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def open_card(self, request: HandoffRequest) -> str:
        return await post_handoff_card(self.client, self.channel, card_for(request))

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        channel, ts = card_ref.split(":", 1)
        return await _post_relayed(
            self.client, channel=channel, thread_ts=ts, text=text, post_id=post_id, retaken=retaken
        )


class SlackCustomerChannel:
    """Customers' Slack conversations, seen from the relay.

    Args:
        clients: the Web API client of a conversation's workspace; a workspace without an
            installation raises, and the relay keeps the message queued for its next round.
    """

    def __init__(self, clients: ClientFor) -> None:
        self.clients = clients

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        client = await self.clients(key.workspace)
        return await _post_relayed(
            client,
            channel=key.channel,
            thread_ts=key.thread or None,
            text=text,
            post_id=post_id,
            retaken=retaken,
        )
