"""`monitoring.metrics.compute` on a hand-built history, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from bot.storage.store import Store
from bot.storage.tables import Conversation, Feedback, Handoff, Message, ReplyRecord
from monitoring.metrics import compute, percentile
from tests.support import fresh_postgres_database

#: A Monday, so that the week bucket starts on it.
DAY0 = datetime(2026, 1, 5, tzinfo=UTC)


def _at(day: int, hour: int, minute: int = 0, second: float = 0) -> datetime:
    return DAY0 + timedelta(days=day, hours=hour, minutes=minute, seconds=second)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at teardown."""
    with fresh_postgres_database("supportbot_metrics") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bot.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store.from_url(url)
    yield store
    store.close()


def _conversation(session: Session, name: str, created: datetime, **values: str) -> str:
    row = Conversation(
        key=f"web::{name}:",
        platform="web",
        workspace="",
        channel=name,
        thread="",
        customer="cust",
        created_at=created,
        updated_at=created,
        **values,
    )
    session.add(row)
    session.flush()
    return row.id


def _message(session: Session, conversation: str, role: str, text: str, at: datetime) -> int:
    row = Message(conversation_id=conversation, role=role, author=role, text=text, created_at=at)
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def _reply(
    session: Session,
    conversation: str,
    message: int | None,
    kind: str,
    at: datetime,
    latency: float | None = None,
) -> str:
    row = ReplyRecord(
        conversation_id=conversation,
        message_id=message,
        kind=kind,
        text=f"{kind} text",
        latency_ms=latency,
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row.id


def _handoff(session: Session, conversation: str, src: str, dst: str, at: datetime) -> None:
    session.add(
        Handoff(
            conversation_id=conversation, from_owner=src, to_owner=dst, actor="x", created_at=at
        )
    )


def _rate(
    session: Session, reply: str, value: str, at: datetime, reason: str | None = None
) -> None:
    session.add(
        Feedback(
            reply_id=reply,
            platform="web",
            user="cust",
            value=value,
            reason=reason,
            event_id=uuid.uuid4().hex,
            created_at=at,
            updated_at=at,
        )
    )


def _history(store: Store) -> None:
    """Four conversations in the window (days 0-1) and one before it."""
    with Session(store.engine) as s:
        # A: answered, rated 👍, closed by the customer: deflected.
        a = _conversation(s, "a", _at(0, 10), status="closed")
        m = _message(s, a, "user", "Thanks, this is great and helpful!", _at(0, 10))
        r = _reply(s, a, m, "answer", _at(0, 10, 0, 1), 100.0)
        _rate(s, r, "up", _at(0, 10, 1))
        # B: a fallback rated 👎, handed over, an agent answers 4 minutes later; the bot then
        # answers again while the agent owns it (never should).
        b = _conversation(s, "b", _at(0, 11), owner="human")
        m = _message(s, b, "user", "This is terrible, I am very angry", _at(0, 11))
        r = _reply(s, b, m, "fallback", _at(0, 11, 0, 1), 300.0)
        _rate(s, r, "down", _at(0, 11, 0, 30), reason="wrong_answer")
        m = _message(s, b, "user", "I want a person", _at(0, 11, 1))
        _handoff(s, b, "bot", "human", _at(0, 11, 1))
        _reply(s, b, m, "handoff", _at(0, 11, 1, 1))
        _message(s, b, "agent", "Hi, I'm here", _at(0, 11, 5))
        m = _message(s, b, "user", "ok", _at(0, 11, 9))
        _reply(s, b, m, "answer", _at(0, 11, 10))
        # C: one message answered twice (never should), then smalltalk; left idle: deflected.
        c = _conversation(s, "c", _at(1, 9))
        m = _message(s, c, "user", "how do I reset my password", _at(1, 9))
        _reply(s, c, m, "answer", _at(1, 9, 0, 1), 200.0)
        _reply(s, c, m, "answer", _at(1, 9, 0, 2), 400.0)
        m = _message(s, c, "user", "hello", _at(1, 9, 1))
        _reply(s, c, m, "smalltalk", _at(1, 9, 1, 1))
        # D: handed over, nobody came; handed back, the bot answers (fine).
        d = _conversation(s, "d", _at(1, 12))
        m = _message(s, d, "user", "human please", _at(1, 12))
        _handoff(s, d, "bot", "human", _at(1, 12, 1))
        _reply(s, d, m, "handoff", _at(1, 12, 1, 1))
        _handoff(s, d, "human", "bot", _at(1, 13))
        m = _message(s, d, "user", "what are your hours", _at(1, 13, 4))
        _reply(s, d, m, "answer", _at(1, 13, 5))
        # E: before the window.
        e = _conversation(s, "e", _at(-2, 10))
        m = _message(s, e, "user", "old", _at(-2, 10))
        r = _reply(s, e, m, "fallback", _at(-2, 10, 0, 1), 5000.0)
        _rate(s, r, "down", _at(-2, 10, 1))
        s.commit()


def test_figures_of_a_known_history(store: Store) -> None:
    _history(store)
    metrics = compute(store, since=DAY0, until=_at(3, 0), deflection_window=timedelta(hours=24))

    assert metrics.conversations == 4
    assert metrics.messages == 8
    assert metrics.replies == 9
    assert dict(metrics.replies_by_kind) == {
        "answer": 5,
        "fallback": 1,
        "handoff": 2,
        "smalltalk": 1,
    }
    assert metrics.questions == 8
    assert metrics.answer_rate == pytest.approx(5 / 8)
    assert metrics.fallback_rate == pytest.approx(1 / 8)
    assert metrics.handoffs == 2
    assert metrics.handoff_rate == pytest.approx(0.5)
    assert (metrics.deflection.eligible, metrics.deflection.deflected) == (4, 2)
    assert metrics.deflection.rate == pytest.approx(0.5)
    assert (metrics.csat.overall.part, metrics.csat.overall.whole) == (1, 2)
    assert metrics.csat.bot_only.rate == 1.0
    assert metrics.csat.bot_then_human.rate == 0.0
    assert dict(metrics.feedback_reasons) == {"wrong_answer": 1}
    assert dict(metrics.feedback_by_platform) == {"web": 2}
    assert metrics.time_to_human_s.count == 1
    assert metrics.time_to_human_s.p50 == pytest.approx(240.0)
    assert metrics.unanswered_handoffs == 1
    assert metrics.latency_ms.count == 4
    assert metrics.latency_ms.p50 == pytest.approx(250.0)
    assert metrics.latency_ms.max == 400.0
    assert metrics.anomalies.bot_spoke_while_human_owned == 1
    assert metrics.anomalies.duplicate_replies == 1
    assert metrics.sentiment is not None

    days = metrics.series
    assert [b.start for b in days] == [DAY0, _at(1, 0), _at(2, 0)]
    assert [b.conversations for b in days] == [2, 2, 0]
    assert [b.replies for b in days] == [4, 5, 0]
    assert [(b.thumbs_up, b.thumbs_down) for b in days] == [(1, 1), (0, 0), (0, 0)]
    assert [b.handoffs for b in days] == [1, 1, 0]
    assert days[0].latency_p50_ms == pytest.approx(200.0)
    assert days[2].sentiment is None and days[2].answer_rate is None
    # Day 0 holds the happiest and the angriest message; day 1 only neutral ones.
    assert days[1].sentiment == pytest.approx(0.0, abs=0.3)

    data = json.loads(json.dumps(metrics.as_dict()))
    assert data["summary"]["duplicate_replies"] == 1
    assert data["csat"]["bot_only"]["rate"] == 1.0
    assert data["series"][0]["start"] == DAY0.isoformat()


def test_buckets_hour_and_week(store: Store) -> None:
    _history(store)
    weeks = compute(store, since=DAY0, until=_at(3, 0), bucket="week")
    assert [b.start for b in weeks.series] == [DAY0]
    assert weeks.series[0].replies == 9
    hours = compute(store, since=_at(0, 10), until=_at(0, 12), bucket="hour")
    assert [(b.start, b.replies) for b in hours.series] == [(_at(0, 10), 1), (_at(0, 11), 3)]


def test_deflection_needs_conversations_old_enough(store: Store) -> None:
    _history(store)
    # Conversations of day 1 are not 48 h old at the end of day 2: only day 0's count.
    metrics = compute(store, since=DAY0, until=_at(3, 0), deflection_window=timedelta(hours=48))
    assert (metrics.deflection.eligible, metrics.deflection.deflected) == (2, 1)
    short = compute(store, since=DAY0, until=_at(0, 12), deflection_window=timedelta(days=2))
    assert short.deflection.eligible == 0 and short.deflection.rate is None


def test_empty_window_and_bad_arguments(store: Store) -> None:
    metrics = compute(store, since=DAY0, until=_at(1, 0))
    assert (
        metrics.replies == 0 and metrics.answer_rate is None and metrics.csat.overall.rate is None
    )
    assert metrics.latency_ms.p50 is None and metrics.anomalies.total == 0
    with pytest.raises(ValueError, match="end after"):
        compute(store, since=DAY0, until=DAY0)
    with pytest.raises(ValueError, match="bucket"):
        compute(store, since=DAY0, until=_at(1, 0), bucket="month")  # type: ignore[arg-type]


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
