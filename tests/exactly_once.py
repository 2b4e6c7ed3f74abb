"""Checks shared by the fault tests: every accepted customer message has exactly one reply.

The database is read directly (customer messages joined to the replies that answer them), so
the checks see what the bot recorded, whichever process recorded it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bot.model import Role
from bot.storage.tables import Conversation, Message, ReplyRecord

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "distinct_questions",
    "replies_per_message",
    "unanswered_or_twice",
    "unposted_replies",
    "wait_until",
]


def replies_per_message(engine: Engine, platform: str) -> dict[str, int]:
    """For every customer message stored on ``platform``: how many replies answer it.

    Returns:
        The count by the message's platform id.
    """
    query = (
        select(Message.platform_message_id, func.count(col(ReplyRecord.id)))
        .join(Conversation, col(Message.conversation_id) == col(Conversation.id))
        .outerjoin(ReplyRecord, col(ReplyRecord.message_id) == col(Message.id))
        .where(Conversation.platform == platform, Message.role == Role.USER.value)
        .group_by(col(Message.id), col(Message.platform_message_id))
    )
    with Session(engine) as session:
        return {str(mid): int(n) for mid, n in session.exec(query).all()}


def unposted_replies(engine: Engine, platform: str) -> list[str]:
    """The ids of replies on ``platform`` not (yet) known to be posted (no platform reference)."""
    query = (
        select(ReplyRecord.id)
        .join(Conversation, col(ReplyRecord.conversation_id) == col(Conversation.id))
        .where(Conversation.platform == platform, col(ReplyRecord.platform_ref).is_(None))
    )
    with Session(engine) as session:
        return [str(reply_id) for reply_id in session.exec(query).all()]


def unanswered_or_twice(counts: dict[str, int], sent: list[str]) -> dict[str, int]:
    """The messages in ``sent`` not stored, not answered, or answered more than once (by id)."""
    return {mid: counts.get(mid, 0) for mid in sent if counts.get(mid, 0) != 1}


async def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Re-check the blocking ``condition`` (in a worker thread) until it holds.

    Raises:
        AssertionError: it did not hold within ``seconds``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if await asyncio.to_thread(condition):
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def distinct_questions(n: int) -> list[str]:
    """``n`` different sample-KB questions (from knowledge/sample/queries.jsonl), cycled."""
    lines = (REPO / "knowledge" / "sample" / "queries.jsonl").read_text("utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    return [texts[i % len(texts)] for i in range(n)]
