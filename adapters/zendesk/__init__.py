"""Zendesk: the bot answers tickets, hands them to agents, and Zendesk is the agents' desk for
customers on other platforms. See docs/zendesk.md for the set-up.

Modules: `payloads` (wire shapes), `signature` (webhook verification; pure), `convert` (events →
shared model, and what to do with each comment; pure), `render` (replies and notes → comment
HTML; pure), `sentiment` (VADER score for handoff notes), `client` (Support API calls),
`adapter` (the behaviour), `routes` (the webhook route), `plugin` (`mount`, the entry point),
`help_center` (articles from the Help Center API or an export), `settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.zendesk.convert import AgentComment
from adapters.zendesk.plugin import mount
from adapters.zendesk.settings import ZendeskSettings

if TYPE_CHECKING:
    from adapters.zendesk.adapter import AgentCommentCallback, HandoffResult, ZendeskAdapter

__all__ = [
    "AgentComment",
    "AgentCommentCallback",
    "HandoffResult",
    "ZendeskAdapter",
    "ZendeskSettings",
    "mount",
]


def __getattr__(name: str) -> Any:
    """The adapter's names, imported when first asked for: they bring zenpy, which a worker
    without Zendesk never needs (`adapters.zendesk.plugin`)."""
    if name in ("AgentCommentCallback", "HandoffResult", "ZendeskAdapter"):
        from adapters.zendesk import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
