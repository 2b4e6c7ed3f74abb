"""Slack: customers ask in DMs, mentions, threads and auto-answer channels; agents answer in
the agents' channel. Built on slack-bolt; see docs/slack.md for the set-up.

Modules: `payloads` (wire shapes), `convert` (payload → shared model, and what to answer; pure),
`render` (reply → Block Kit; pure), `outbound` (Web API client, posting exactly once), `agents`
(handoff cards), `installation` (OAuth installs in the database), `lease` (one Socket Mode
connection across replicas), `settings`, `app` (the bolt app and its listeners), and `plugin`
(the entry point the web app calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.slack.plugin import mount
from adapters.slack.settings import SlackMode, SlackSettings

if TYPE_CHECKING:
    from adapters.slack.app import SlackAdapter

__all__ = ["SlackAdapter", "SlackMode", "SlackSettings", "mount"]


def __getattr__(name: str) -> Any:
    """`SlackAdapter`, imported when first asked for: it brings slack-bolt, which a worker
    without Slack never needs (`adapters.slack.plugin`)."""
    if name == "SlackAdapter":
        from adapters.slack.app import SlackAdapter

        return SlackAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
