"""Zendesk's side of the human-handoff relay (`bot.relay`): tickets as the agents' desk.

`ZendeskDesk` opens a ticket for a handoff (`ZendeskAdapter.create_ticket_for`; the card reference
is the ticket id) and adds customers' messages to it as internal notes; agents' public comments
on such tickets come back through `ZendeskAdapter.on_agent_comment`, which the adapter passes to
`Relay.agent_said`. `ZendeskCustomerChannel` posts to a Zendesk customer's ticket as a public
comment by the bot.

Posting is at least once: a comment added by a process that died before recording it is added
again by the process that takes the message over (`retaken`). A ticket comment carries no
field of ours to find an earlier copy by (its `metadata` is Zendesk's own), matching on the text
would merge two messages that say the same thing, and the Support API's idempotency keys
(``Idempotency-Key``) are documented for creating tickets, not for the ticket updates that add
comments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.zendesk.client import comment_id_of
from adapters.zendesk.render import markdown_html
from bot.handoff import HandoffRequest
from bot.model import ConversationKey

if TYPE_CHECKING:
    from adapters.zendesk.adapter import ZendeskAdapter

__all__ = ["ZendeskCustomerChannel", "ZendeskDesk"]


class ZendeskDesk:
    """Zendesk tickets as the relay's desk; card references are ticket ids."""

    def __init__(self, adapter: ZendeskAdapter) -> None:
        self.adapter = adapter

    async def open_card(self, request: HandoffRequest) -> str:
        ticket_id = await self.adapter.create_ticket_for(
            request.transcript, request.customer, request.platform, origin=request.key
        )
        return str(ticket_id)

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        # An internal note: the relay ticket's requester is a placeholder, not the customer.
        response = await self.adapter.client.update_ticket(
            int(card_ref),
            {
                "comment": {
                    "html_body": markdown_html(text),
                    "public": False,
                    "author_id": self.adapter.bot_user_id,
                }
            },
        )
        comment_id = comment_id_of(response)
        return None if comment_id is None else str(comment_id)


class ZendeskCustomerChannel:
    """Zendesk customers' tickets, seen from the relay (the key's thread is the ticket id)."""

    def __init__(self, adapter: ZendeskAdapter) -> None:
        self.adapter = adapter

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        response = await self.adapter.client.update_ticket(
            int(key.thread),
            {
                "comment": {
                    "html_body": markdown_html(text),
                    "public": True,
                    "author_id": self.adapter.bot_user_id,
                }
            },
        )
        comment_id = comment_id_of(response)
        return None if comment_id is None else str(comment_id)
