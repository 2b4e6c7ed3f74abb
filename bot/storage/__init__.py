"""Persistent state: conversations, messages, replies, feedback, handoffs, processed events.

Open a store with `Store.from_url(url)` (which also upgrades the schema) or build the engine
yourself with `make_engine` and run `migrate` on it.
"""

from __future__ import annotations

from bot.storage.db import make_engine, migrate
from bot.storage.store import ConversationInfo, ReplyInfo, Store

__all__ = ["ConversationInfo", "ReplyInfo", "Store", "make_engine", "migrate"]
