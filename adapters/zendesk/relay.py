"""Zendesk's side of the human-handoff relay (`bot.relay`): tickets as the agents' desk.

`ZendeskDesk` opens a ticket for a handoff (`ZendeskAdapter.create_ticket_for`; the card reference
is the ticket id) and adds customers' messages to it as internal notes; agents' public comments
on such tickets come back through `ZendeskAdapter.on_agent_comment`, which the adapter passes to
`Relay.agent_said`. `ZendeskCustomerChannel` posts to a Zendesk customer's ticket as a public
comment by the bot.

Posting is exactly once across a crash, as for the bot's replies: every relayed comment is added
by `ZendeskClient.add_comment_once` with the relay post id in its update's custom metadata
(`POST_ID_KEY`, kept by Zendesk on the update's audit as ``metadata.custom``). A message whose
claim was taken again (its process died after posting, before recording it, or a post failed
after reaching Zendesk) is looked for in the ticket's audits first, and the comment of the audit
found is the post. Each delivery round tries once: the relay itself retries a failed post, on a
later round, as retaken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.zendesk.client import POST_ID_KEY, comment_id_in
from adapters.zendesk.render import markdown_html
from bot.handoff import HandoffRequest
from bot.model import ConversationKey

if TYPE_CHECKING:
    from adapters.zendesk.adapter import ZendeskAdapter

__all__ = ["ZendeskCustomerChannel", "ZendeskDesk"]


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
    the audit it left (found by its post id) is the post."""
    audit = await adapter.client.add_comment_once(
        ticket_id,
        {
            "comment": {
                "html_body": markdown_html(text),
                "public": public,
                "author_id": adapter.bot_user_id,
            }
        },
        key=POST_ID_KEY,
        value=post_id,
        look_first=retaken,
        attempts=1,  # the relay retries a failed post on its next round, as retaken
    )
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
