"""The review queue: a sampled share of the bot's replies, plus every reply the QA pass flagged.

A reply enters the queue in two ways, and has at most one row (`bot.storage.tables.ReviewItem`):

* **sampling**: `ReviewQueue.sample` draws a configurable share of replies
  (``SUPPORTBOT_REVIEW_SAMPLE_RATE``, 10 % by default). The draw hashes the reply id, so it is
  deterministic: running it twice, or on two replicas, picks the same replies and never twice.
* **QA**: `monitoring.qa` calls `ReviewQueue.flag` with the guideline breaches it found.

A reviewer marks an item right or wrong (with a note, and optionally the knowledge-base entry that
should have answered). Reviewed accuracy counts only *sampled* items: QA-flagged items are chosen
for looking wrong, so counting them would bias the estimate.

The queue works on an SQLAlchemy engine it is given (the `Store`'s), one short session per call.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from bot.errors import SupportBotError
from bot.model import utcnow
from bot.storage import db
from bot.storage.tables import Message, ReplyRecord, ReviewItem

__all__ = [
    "DEFAULT_SAMPLED_KINDS",
    "ReviewEntry",
    "ReviewError",
    "ReviewQueue",
    "ReviewedAccuracy",
    "Verdict",
    "is_sampled",
]

logger = logging.getLogger(__name__)

#: Reply kinds worth a reviewer's time by default; greetings and handoff notices are not.
DEFAULT_SAMPLED_KINDS: Final[tuple[str, ...]] = ("answer", "clarify", "fallback")
_HASH_SPACE: Final = float(1 << 32)


class ReviewError(SupportBotError):
    """A review action cannot be done (no such item, a bad verdict)."""


class Verdict(enum.StrEnum):
    """A reviewer's judgement of a reply."""

    RIGHT = "right"
    WRONG = "wrong"


def is_sampled(reply_id: str, rate: float) -> bool:
    """Whether the reply falls in the sampled share `rate` (0–1); the same answer every time."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(reply_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / _HASH_SPACE < rate


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    """A queued reply as a reviewer sees it.

    Attributes:
        id: the queue item's id (what `mark` takes).
        reply_id: the reply.
        conversation_id: its conversation.
        kind: the reply's kind ("answer", "fallback", ...).
        question: what the customer wrote (the message the reply answers), or the retrieval query.
        reply_text: what the bot said.
        confidence: the bot's confidence, where it had one.
        sources: the entry ids the reply drew on, best first.
        sampled: drawn by sampling (counts for reviewed accuracy).
        violations: QA breaches, ``({"rule": ..., "detail": ...}, ...)``.
        verdict: "right", "wrong", or None while pending.
        note: the reviewer's note.
        expected_entry: the entry that should have answered, per the reviewer.
        reviewer: who marked it.
        replied_at: when the bot replied.
        reviewed_at: when it was marked.
    """

    id: int
    reply_id: str
    conversation_id: str
    kind: str
    question: str
    reply_text: str
    confidence: float | None
    sources: tuple[str, ...]
    sampled: bool
    violations: tuple[dict[str, str], ...]
    verdict: str | None
    note: str | None
    expected_entry: str | None
    reviewer: str | None
    replied_at: datetime
    reviewed_at: datetime | None

    @property
    def reasons(self) -> str:
        """Why it is queued, for tables: "sampled", "qa: rule, rule", or both."""
        parts = ["sampled"] if self.sampled else []
        if self.violations:
            parts.append("qa: " + ", ".join(sorted({v["rule"] for v in self.violations})))
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ReviewedAccuracy:
    """What reviewers said about sampled replies in a period.

    Attributes:
        right: sampled items marked right.
        wrong: sampled items marked wrong.
        pending: sampled items not reviewed yet.
        flagged: items in the queue because of QA (sampled or not).
    """

    right: int
    wrong: int
    pending: int
    flagged: int

    @property
    def reviewed(self) -> int:
        return self.right + self.wrong

    @property
    def accuracy(self) -> float | None:
        """Right among reviewed sampled items; None before anything was reviewed."""
        return self.right / self.reviewed if self.reviewed else None


class ReviewQueue:
    """The review queue on a database.

    Args:
        engine: the bot's database (migrated); `Store.engine`.
        sample_rate: the share of replies `sample` draws (0–1).
        kinds: the reply kinds `sample` considers.

    Raises:
        ValueError: `sample_rate` is outside 0–1.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        sample_rate: float = 0.1,
        kinds: Sequence[str] = DEFAULT_SAMPLED_KINDS,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(
                f"the review sample rate must be between 0 and 1, not {sample_rate}: "
                "set SUPPORTBOT_REVIEW_SAMPLE_RATE to e.g. 0.1"
            )
        self._engine = engine
        self.sample_rate = sample_rate
        self.kinds = tuple(kinds)

    @property
    def engine(self) -> Engine:
        """The database the queue works on."""
        return self._engine

    def _session(self, action: str) -> _Session:
        return _Session(self._engine, action)

    # Filling the queue -------------------------------------------------------------------------

    def sample(self, since: datetime | None = None) -> int:
        """Queue the sampled share of replies (made since `since`) not queued yet.

        Returns:
            How many replies were added.
        """
        query = select(ReplyRecord.id).where(col(ReplyRecord.kind).in_(self.kinds))
        if since is not None:
            query = query.where(col(ReplyRecord.created_at) >= since)
        queued = select(ReviewItem.reply_id)
        query = query.where(col(ReplyRecord.id).not_in(queued))
        added = 0
        with self._session("sample replies for review") as session:
            ids = [
                reply_id
                for reply_id in session.exec(query)
                if is_sampled(reply_id, self.sample_rate)
            ]
            for reply_id in ids:
                session.add(ReviewItem(reply_id=reply_id, sampled=True))
                added += 1
            session.commit()
        if added:
            logger.info("review queue: %d replies sampled", added)
        return added

    def flag(self, reply_id: str, violations: Iterable[dict[str, str]]) -> bool:
        """Record QA breaches of a reply (replacing earlier ones); queue it if it is not yet.

        A reply with no breaches that is already queued keeps its row with the breaches cleared.

        Returns:
            True if the reply is in the queue because of QA now.
        """
        found = [dict(v) for v in violations]
        with self._session("flag a reply for review") as session:
            for _ in range(2):
                row = session.exec(
                    select(ReviewItem).where(ReviewItem.reply_id == reply_id)
                ).first()
                if row is None:
                    if not found:
                        return False
                    session.add(
                        ReviewItem(
                            reply_id=reply_id,
                            sampled=is_sampled(reply_id, self.sample_rate),
                            violations=found,
                        )
                    )
                else:
                    if row.violations == found:
                        return bool(found)
                    row.violations = found
                    session.add(row)
                try:
                    session.commit()
                except IntegrityError:
                    # Queued by a concurrent sampler meanwhile: update that row instead.
                    session.rollback()
                    continue
                return bool(found)
        return bool(found)

    # Reading and marking -----------------------------------------------------------------------

    def entries(
        self,
        *,
        status: str = "pending",
        limit: int = 50,
        only_flagged: bool = False,
    ) -> list[ReviewEntry]:
        """Queue items, newest reply first.

        Args:
            status: "pending", "reviewed" or "all".
            limit: at most this many.
            only_flagged: only items QA flagged.

        Raises:
            ReviewError: an unknown status.
        """
        query = select(ReviewItem, ReplyRecord, Message).join(
            ReplyRecord, col(ReviewItem.reply_id) == col(ReplyRecord.id)
        )
        query = query.outerjoin(Message, col(ReplyRecord.message_id) == col(Message.id))
        if status == "pending":
            query = query.where(col(ReviewItem.verdict).is_(None))
        elif status == "reviewed":
            query = query.where(col(ReviewItem.verdict).is_not(None))
        elif status != "all":
            raise ReviewError(f"unknown status {status!r}: use pending, reviewed or all")
        query = query.order_by(col(ReplyRecord.created_at).desc(), col(ReviewItem.id).desc())
        with self._session("list the review queue") as session:
            rows = session.exec(query).all()
        result = [_entry(item, reply, message) for item, reply, message in rows]
        if only_flagged:
            result = [entry for entry in result if entry.violations]
        return result[:limit]

    def get(self, item_id: int) -> ReviewEntry | None:
        """One queue item, or None."""
        query = (
            select(ReviewItem, ReplyRecord, Message)
            .join(ReplyRecord, col(ReviewItem.reply_id) == col(ReplyRecord.id))
            .outerjoin(Message, col(ReplyRecord.message_id) == col(Message.id))
            .where(ReviewItem.id == item_id)
        )
        with self._session("read a review item") as session:
            row = session.exec(query).first()
        return None if row is None else _entry(*row)

    def mark(
        self,
        item_id: int,
        verdict: Verdict | str,
        *,
        reviewer: str,
        note: str | None = None,
        expected_entry: str | None = None,
    ) -> ReviewEntry:
        """Record a reviewer's verdict on a queue item (a later mark replaces an earlier one).

        Args:
            item_id: the queue item.
            verdict: "right" or "wrong".
            reviewer: who judged it.
            note: why, in a few words.
            expected_entry: the knowledge-base entry that should have answered, if known.

        Raises:
            ReviewError: no such item, or a verdict other than right/wrong.
        """
        try:
            value = Verdict(verdict)
        except ValueError:
            raise ReviewError(f"a verdict is 'right' or 'wrong', not {verdict!r}") from None
        with self._session("mark a review item") as session:
            row = session.get(ReviewItem, item_id)
            if row is None:
                raise ReviewError(
                    f"no review item {item_id}: see `supportbot review list` for the ids"
                )
            row.verdict = value.value
            row.reviewer = reviewer
            row.note = (note or "").strip() or None
            row.expected_entry = (expected_entry or "").strip() or None
            row.reviewed_at = utcnow()
            session.add(row)
            session.commit()
        logger.info("review item %s marked %s", item_id, value.value)
        entry = self.get(item_id)
        assert entry is not None
        return entry

    def verdicts(self, reply_ids: Iterable[str]) -> dict[str, ReviewEntry]:
        """The reviewed items of these replies, by reply id."""
        wanted = list(set(reply_ids))
        if not wanted:
            return {}
        query = (
            select(ReviewItem, ReplyRecord, Message)
            .join(ReplyRecord, col(ReviewItem.reply_id) == col(ReplyRecord.id))
            .outerjoin(Message, col(ReplyRecord.message_id) == col(Message.id))
            .where(col(ReviewItem.reply_id).in_(wanted), col(ReviewItem.verdict).is_not(None))
        )
        with self._session("read review verdicts") as session:
            rows = session.exec(query).all()
        return {item.reply_id: _entry(item, reply, message) for item, reply, message in rows}

    def accuracy(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> ReviewedAccuracy:
        """Reviewed accuracy of the sampled replies made in [since, until)."""
        query = select(ReviewItem.sampled, ReviewItem.verdict, ReviewItem.violations).join(
            ReplyRecord, col(ReviewItem.reply_id) == col(ReplyRecord.id)
        )
        if since is not None:
            query = query.where(col(ReplyRecord.created_at) >= since)
        if until is not None:
            query = query.where(col(ReplyRecord.created_at) < until)
        right = wrong = pending = flagged = 0
        with self._session("compute reviewed accuracy") as session:
            for sampled, verdict, violations in session.exec(query):
                if violations:
                    flagged += 1
                if not sampled:
                    continue
                if verdict == Verdict.RIGHT:
                    right += 1
                elif verdict == Verdict.WRONG:
                    wrong += 1
                else:
                    pending += 1
        return ReviewedAccuracy(right, wrong, pending, flagged)

    def count(self) -> int:
        """Items in the queue, reviewed or not."""
        with self._session("count review items") as session:
            return int(session.exec(select(func.count()).select_from(ReviewItem)).one())


def _entry(item: ReviewItem, reply: ReplyRecord, message: Message | None) -> ReviewEntry:
    assert item.id is not None
    return ReviewEntry(
        id=item.id,
        reply_id=reply.id,
        conversation_id=reply.conversation_id,
        kind=reply.kind,
        question=message.text if message is not None else reply.query,
        reply_text=reply.text,
        confidence=reply.confidence,
        sources=tuple(str(s.get("id")) for s in reply.sources if isinstance(s, dict)),
        sampled=item.sampled,
        violations=tuple(_violation(v) for v in item.violations),
        verdict=item.verdict,
        note=item.note,
        expected_entry=item.expected_entry,
        reviewer=item.reviewer,
        replied_at=reply.created_at,
        reviewed_at=item.reviewed_at,
    )


def _violation(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {"rule": str(value.get("rule", "?")), "detail": str(value.get("detail", ""))}
    return {"rule": str(value), "detail": ""}


class _Session:
    """A session whose SQLAlchemy errors become `StorageError`s naming the action."""

    def __init__(self, engine: Engine, action: str) -> None:
        self._engine = engine
        self._action = action
        self._session: Session | None = None

    def __enter__(self) -> Session:
        self._session = Session(self._engine, expire_on_commit=False)
        return self._session

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._session is not None
        self._session.close()
        if isinstance(exc, SQLAlchemyError):
            raise db.storage_error(exc, self._engine.url, self._action) from exc
