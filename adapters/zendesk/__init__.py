"""Zendesk: the bot answers tickets, hands them to agents, and Zendesk is the agents' desk for
customers on other platforms. See docs/zendesk.md for the set-up.

Modules: `payloads` (wire shapes), `signature` (webhook verification; pure), `convert` (events →
shared model, and what to do with each comment; pure), `render` (replies and notes → comment
HTML; pure), `sentiment` (VADER score for handoff notes), `client` (Support API calls),
`adapter` (the behaviour), `routes` (the webhook route and `mount`), `help_center` (articles from
the Help Center API or an export), `settings`.
"""

from adapters.zendesk.adapter import AgentCommentCallback, HandoffResult, ZendeskAdapter
from adapters.zendesk.convert import AgentComment
from adapters.zendesk.routes import mount
from adapters.zendesk.settings import ZendeskSettings

__all__ = [
    "AgentComment",
    "AgentCommentCallback",
    "HandoffResult",
    "ZendeskAdapter",
    "ZendeskSettings",
    "mount",
]
