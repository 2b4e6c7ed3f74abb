"""Slack: customers ask in DMs, mentions, threads and auto-answer channels; agents answer in
the agents' channel. Built on slack-bolt; see docs/slack.md for the set-up.

Modules: `payloads` (wire shapes), `convert` (payload → shared model, and what to answer; pure),
`render` (reply → Block Kit; pure), `outbound` (Web API client, posting exactly once), `agents`
(handoff cards), `installation` (OAuth installs in the database), `lease` (one Socket Mode
connection across replicas), `settings`, and `app` (the bolt app and its listeners).
"""

from adapters.slack.app import SlackAdapter, mount
from adapters.slack.settings import SlackMode, SlackSettings

__all__ = ["SlackAdapter", "SlackMode", "SlackSettings", "mount"]
