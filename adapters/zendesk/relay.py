"""Zendesk's side of the human-handoff relay (`bot.relay`): tickets as the agents' desk.

`ZendeskDesk` opens a ticket for a handoff (`ZendeskAdapter.create_ticket_for`; the card reference
is the ticket id) and adds customers' messages to it as internal notes; agents' public comments
on such tickets come back through `ZendeskAdapter.on_agent_comment`, which the adapter passes to
`Relay.agent_said`. `ZendeskCustomerChannel` posts to a Zendesk customer's ticket as a public
comment by the bot.

Posting is exactly once across a crash: every relayed comment is added by a ticket update whose
audit carries the relay post id in its custom metadata (``metadata.custom``, documented for
ticket updates and read back by the Ticket Audits API). A message whose claim was taken again
(its process died after posting, before recording it, or a post failed after reaching Zendesk)
is looked for in the ticket's audits first, and the comment of the audit found is the post.
Matching on the text instead would merge two messages that say the same thing, and the Support
API's idempotency keys (``Idempotency-Key``) are documented for creating tickets, not for the
ticket updates that add comments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapters.zendesk.client import comment_id_in
from adapters.zendesk.render import markdown_html
from bot.handoff import HandoffRequest
from bot.model import ConversationKey

if TYPE_CHECKING:
    from adapters.zendesk.adapter import ZendeskAdapter

__all__ = ["POST_ID_KEY", "ZendeskCustomerChannel", "ZendeskDesk"]

#: The key of a relayed comment's post id in its audit's custom metadata.
POST_ID_KEY = "supportbot_post_id"


async def _post_relayed(
    adapter: ZendeskAdapter,
    ticket_id: int,
    text: str,
    *,
    public: bool,
    post_id: str,
    retaken: bool,
) -> str | None:
    """Add a relayed comment once: when an earlier try may have reached Zendesk, the comment of
    the audit it left (found by its metadata) is the post."""
    client = adapter.client
    audit: Mapping[str, Any] | None = None
    if retaken:
        audit = await client.find_audit(ticket_id, POST_ID_KEY, post_id)
    if audit is None:
        response = await client.update_ticket(
            ticket_id,
            {
                "comment": {
                    "html_body": markdown_html(text),
                    "public": public,
                    "author_id": adapter.bot_user_id,
                }
            },
            metadata={POST_ID_KEY: post_id},
        )
        audit = response.get("audit") or {}
    comment_id = comment_id_in(audit)
    return None if comment_id is None else str(comment_id)


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
        return await _post_relayed(
            self.adapter, int(card_ref), text, public=False, post_id=post_id, retaken=retaken
        )


class ZendeskCustomerChannel:
    """Zendesk customers' tickets, seen from the relay (the key's thread is the ticket id)."""

    def __init__(self, adapter: ZendeskAdapter) -> None:
        self.adapter = adapter

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        return await _post_relayed(
            self.adapter, int(key.thread), text, public=True, post_id=post_id, retaken=retaken
        )
