"""The bot's own stored conversations (`bot.storage.Store`), handoffs and feedback included.

Roles map one to one (the stored "user" is the customer). A bot message carries its reply's
kind, sources and ratings in `meta` (`kind`, `sources`, `feedback`); an agent's message written
after the conversation was handed to a person carries `after_handoff: True`. A conversation is
resolved when it was closed, or when its relay link was resolved by an agent.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from bot.model import Owner, Role
from bot.storage.store import ConversationRecord, Store
from training.importers.base import ImportResult, People
from training.model import Conversation, Signals, Speaker, Turn

__all__ = ["load_store", "record_to_conversation"]

logger = logging.getLogger(__name__)

_ROLES = {Role.USER: Speaker.CUSTOMER, Role.BOT: Speaker.BOT, Role.AGENT: Speaker.AGENT}


def record_to_conversation(record: ConversationRecord, source: str = "db") -> Conversation:
    """One stored conversation in the internal format."""
    replies = list(record.replies)
    handoff_times = [h.created_at for h in record.handoffs if h.to_owner == Owner.HUMAN.value]
    turns = []
    up = down = 0
    for message in record.messages:
        meta: dict[str, Any] = {"message_id": str(message.id)}
        if message.role is Role.BOT:
            # add_reply stores each reply's text as a bot message, in the same order.
            match = next((r for r in replies if r.text == message.text), None)
            if match is not None:
                replies.remove(match)
                meta["reply_id"] = match.id
                meta["kind"] = match.kind.value
                meta["sources"] = [s.id for s in match.sources]
                counts = record.feedback.get(match.id, {})
                up += counts.get("up", 0)
                down += counts.get("down", 0)
                if counts.get("up", 0) != counts.get("down", 0):
                    meta["feedback"] = "up" if counts.get("up", 0) > counts["down"] else "down"
        if message.role is Role.AGENT and any(t <= message.created_at for t in handoff_times):
            meta["after_handoff"] = True
        turns.append(
            Turn(_ROLES[message.role], message.author, message.text, message.created_at, meta)
        )
    resolved = (
        record.info.status == "closed"
        or record.relay_state == "resolved"
        or any(h.reason == "resolved" for h in record.handoffs)
    )
    return Conversation(
        id=f"db:{record.info.id}",
        source=source,
        platform=record.info.key.platform,
        turns=tuple(turns),
        signals=Signals(
            resolved=resolved,
            thumbs_up=up,
            thumbs_down=down,
            handed_off=bool(handoff_times),
        ),
    )


def load_store(store: Store, source: str = "db") -> ImportResult:
    """Every stored conversation, in the internal format."""
    conversations = []
    dropped: Counter[str] = Counter()
    for record in store.conversation_records():
        if not record.messages:
            dropped["db:empty_conversation"] += 1
            continue
        conversations.append(record_to_conversation(record, source))
    logger.info("database %s: %d conversations", source, len(conversations))
    return ImportResult(tuple(conversations), People(), dict(dropped))
