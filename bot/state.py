"""Reading a conversation's recent history for the policies: messages with their reply kinds.

`Store.history` gives each message's role and text; the policies also need, for the bot's
messages, what kind of reply each was, which entries it drew on and whether it was rated 👎. This
module reads that in three small queries (read-only, one short session).

It reads the storage tables directly because `Store` has no call for a conversation's replies yet;
the query belongs in `Store` (`Store.recent_turns(conversation_id, limit)`) once the storage API
takes it, and `read_history` then becomes a one-line call.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from bot.model import FeedbackValue, ReplyKind, Role, Source
from bot.storage import db
from bot.storage.store import Store
from bot.storage.tables import Feedback, Message, ReplyRecord
from policies.state import HistoryTurn

__all__ = ["read_history"]


def _source(data: dict[str, object]) -> Source:
    score = data.get("score", 0.0)
    title, url = data.get("title"), data.get("url")
    return Source(
        id=str(data["id"]),
        score=float(score) if isinstance(score, int | float) else 0.0,
        title=title if isinstance(title, str) else None,
        url=url if isinstance(url, str) else None,
    )


def read_history(store: Store, conversation_id: str, limit: int) -> list[HistoryTurn]:
    """The last `limit` messages of a conversation, oldest first, bot messages with reply facts.

    A bot message is matched to the stored reply with the same text, newest with newest (every
    reply is stored with its history message in one transaction, in order).

    Raises:
        StorageError: the database failed.
    """
    if limit <= 0:
        return []
    messages_query = (
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    replies_query = (
        select(ReplyRecord)
        .where(ReplyRecord.conversation_id == conversation_id)
        .order_by(col(ReplyRecord.created_at).desc(), col(ReplyRecord.id).desc())
        .limit(limit)
    )
    try:
        with Session(store.engine) as session:
            messages = list(reversed(session.exec(messages_query).all()))
            replies = list(session.exec(replies_query).all())
            reply_ids = [r.id for r in replies]
            downvoted: set[str] = set()
            if reply_ids:
                rated = select(Feedback.reply_id).where(
                    col(Feedback.reply_id).in_(reply_ids),
                    Feedback.value == FeedbackValue.DOWN.value,
                )
                downvoted = set(session.exec(rated).all())
    except SQLAlchemyError as exc:
        raise db.storage_error(exc, store.engine.url, "read a conversation's state") from exc

    unmatched = list(replies)  # newest first
    turns: list[HistoryTurn] = []
    for message in reversed(messages):
        role = Role(message.role)
        if role is not Role.BOT:
            turns.append(HistoryTurn(role, message.text))
            continue
        match = next((r for r in unmatched if r.text == message.text), None)
        if match is None:
            turns.append(HistoryTurn(role, message.text))
            continue
        unmatched = unmatched[unmatched.index(match) + 1 :]
        turns.append(
            HistoryTurn(
                role,
                message.text,
                reply_kind=ReplyKind(match.kind),
                sources=tuple(_source(item) for item in match.sources),
                downvoted=match.id in downvoted,
            )
        )
    turns.reverse()
    return turns
