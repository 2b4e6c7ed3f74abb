"""The `Store` API, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import TypeVar

import pytest
from sqlmodel import Session, col, select

from bot.errors import StorageError
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    FeedbackValue,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Source,
    Turn,
)
from bot.storage.store import Store
from bot.storage.tables import TABLE_NAMES, Feedback, Handoff

T = TypeVar("T")

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")
THREADS = 8


def _all_at_once(fn: Callable[[], T], n: int = THREADS) -> list[T]:
    """Run `fn` in `n` threads released together; return every result."""
    barrier = threading.Barrier(n)

    def run() -> T:
        barrier.wait(timeout=10)
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return [future.result(timeout=60) for future in [pool.submit(run) for _ in range(n)]]


def _feedback(
    reply_id: str,
    user: str,
    value: FeedbackValue | None,
    event_id: str = "ev",
    reason: str | None = None,
) -> FeedbackEvent:
    return FeedbackEvent("slack", reply_id, user, value, event_id, reason)


def _reply(store: Store) -> str:
    conversation = store.get_or_create_conversation(KEY, "U1")
    message_id = store.add_message(conversation.id, Role.USER, "U1", "how do I reset?")
    return store.add_reply(conversation.id, message_id, Reply.answer("Like this.", ()))


# Events -----------------------------------------------------------------------------------------


def test_only_sqlite_runs_in_the_process(store: Store, db_url: str) -> None:
    """`in_process`: whether the turn's storage holds the GIL (`Engine._prefetch`)."""
    assert store.in_process is db_url.startswith("sqlite")


def test_claim_event_once(store: Store) -> None:
    assert store.claim_event("slack", "Ev1") is True
    assert store.claim_event("slack", "Ev1") is False
    assert store.claim_event("discord", "Ev1") is True  # unique per platform
    assert store.claim_event("slack", "Ev2") is True
    assert store.counts()["processed_event"] == 3


def test_claim_event_concurrently_exactly_one_wins(store: Store) -> None:
    for round_ in range(3):
        results = _all_at_once(partial(store.claim_event, "slack", f"race-{round_}"))
        assert sorted(results) == [False] * (THREADS - 1) + [True]
    assert store.counts()["processed_event"] == 3


# Conversations ----------------------------------------------------------------------------------


def test_get_or_create_conversation(store: Store) -> None:
    created = store.get_or_create_conversation(KEY, "U1")
    assert created.key == KEY
    assert created.owner is Owner.BOT
    assert created.status == "open"
    assert created.customer == "U1"
    assert len(created.id) == 32
    assert created.created_at.tzinfo is not None
    assert created.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created.created_at) < timedelta(minutes=1)

    again = store.get_or_create_conversation(KEY, "U2")
    assert again == created  # the first customer stays
    assert store.get_conversation(created.id) == created

    other = store.get_or_create_conversation(ConversationKey("slack", "T1", "C1"), "U2")
    assert other.id != created.id
    assert other.key.thread == ""
    assert store.counts()["conversation"] == 2
    assert store.get_conversation("nope") is None


def test_get_or_create_conversation_concurrently(store: Store) -> None:
    results = _all_at_once(lambda: store.get_or_create_conversation(KEY, "U1"))
    assert len({info.id for info in results}) == 1
    assert store.counts()["conversation"] == 1


def test_set_owner_records_handoffs(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    store.set_owner(conversation.id, Owner.HUMAN, "U1", "asked for a person")
    assert (info := store.get_conversation(conversation.id)) is not None
    assert info.owner is Owner.HUMAN
    store.set_owner(conversation.id, Owner.HUMAN, "agent-7")  # no change, no handoff
    store.set_owner(conversation.id, Owner.BOT, "agent-7")
    assert store.get_or_create_conversation(KEY, "U1").owner is Owner.BOT

    with Session(store.engine) as session:
        rows = session.exec(select(Handoff).order_by(col(Handoff.id))).all()
        handoffs = [(r.from_owner, r.to_owner, r.actor, r.reason) for r in rows]
        assert all(r.conversation_id == conversation.id for r in rows)
    assert handoffs == [
        ("bot", "human", "U1", "asked for a person"),
        ("human", "bot", "agent-7", None),
    ]
    with pytest.raises(StorageError, match="no conversation"):
        store.set_owner("nope", Owner.HUMAN, "U1")


def test_set_owner_concurrently_records_one_handoff(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    _all_at_once(lambda: store.set_owner(conversation.id, Owner.HUMAN, "U1"))
    assert store.counts()["handoff"] == 1


def test_set_status(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    store.set_status(conversation.id, "closed")
    assert store.get_or_create_conversation(KEY, "U1").status == "closed"
    with pytest.raises(ValueError, match="status"):
        store.set_status(conversation.id, "archived")
    with pytest.raises(StorageError, match="no conversation"):
        store.set_status("nope", "open")


# Messages, replies, history --------------------------------------------------------------------


def test_history_is_oldest_first_and_limited(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    other = store.get_or_create_conversation(ConversationKey("web", "", "session-9"), "V1")
    store.add_message(other.id, Role.USER, "V1", "elsewhere")
    for n in range(6):
        role = Role.USER if n % 2 == 0 else Role.AGENT
        store.add_message(conversation.id, role, "someone", f"m{n}", platform_message_id=f"p{n}")

    assert store.history(conversation.id) == [
        Turn(Role.USER if n % 2 == 0 else Role.AGENT, f"m{n}") for n in range(6)
    ]
    assert [turn.text for turn in store.history(conversation.id, limit=3)] == ["m3", "m4", "m5"]
    assert store.history(conversation.id, limit=0) == []
    assert store.history(other.id) == [Turn(Role.USER, "elsewhere")]
    assert store.history("nope") == []


def test_add_message_returns_increasing_ids(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    first = store.add_message(conversation.id, Role.USER, "U1", "a")
    second = store.add_message(conversation.id, Role.USER, "U1", "b")
    assert isinstance(first, int)
    assert second > first


def test_add_message_to_unknown_conversation_fails(store: Store) -> None:
    with pytest.raises(StorageError, match="store a message"):
        store.add_message("nope", Role.USER, "U1", "hello")


def test_add_reply_and_get_reply(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    message_id = store.add_message(conversation.id, Role.USER, "U1", "how do I reset?")
    sources = (
        Source("kb-1", 0.91, "Resetting", "https://help.example/reset"),
        Source("kb-2", 0.42),
    )
    reply_id = store.add_reply(
        conversation.id,
        message_id,
        Reply.answer("Go to settings.", sources, confidence=0.8),
        query="reset password",
        latency_ms=12.5,
    )
    assert len(reply_id) == 32

    info = store.get_reply(reply_id)
    assert info is not None
    assert info.id == reply_id
    assert info.conversation_id == conversation.id
    assert info.kind is ReplyKind.ANSWER
    assert info.text == "Go to settings."
    assert info.sources == sources
    assert info.confidence == 0.8
    assert info.query == "reset password"
    assert info.platform_ref is None
    assert info.message_id == message_id
    assert info.latency_ms == 12.5
    assert info.created_at is not None and info.created_at.utcoffset() == timedelta(0)

    # The reply joins the history as a bot message.
    assert store.history(conversation.id) == [
        Turn(Role.USER, "how do I reset?"),
        Turn(Role.BOT, "Go to settings."),
    ]
    assert store.get_reply("nope") is None


def test_add_reply_without_message_and_with_preset_id(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    reply = Reply.fallback("I don't know.")
    reply_id = store.add_reply(conversation.id, None, reply)
    info = store.get_reply(reply_id)
    assert info is not None
    assert (info.kind, info.sources, info.confidence, info.message_id, info.query) == (
        ReplyKind.FALLBACK,
        (),
        None,
        None,
        "",
    )
    preset = Reply(text="hi", kind=ReplyKind.SMALLTALK, id="fixed-id")
    assert store.add_reply(conversation.id, None, preset) == "fixed-id"
    with pytest.raises(StorageError, match="store a reply"):
        store.add_reply(conversation.id, None, preset)  # the id is taken
    with pytest.raises(StorageError, match="store a reply"):
        store.add_reply("nope", None, reply)


def test_platform_ref(store: Store) -> None:
    reply_id = _reply(store)
    assert store.find_reply_by_platform_ref("C1:1700000001.000200") is None
    store.set_reply_platform_ref(reply_id, "C1:1700000001.000200")
    found = store.find_reply_by_platform_ref("C1:1700000001.000200")
    assert found is not None
    assert found.id == reply_id
    assert found.platform_ref == "C1:1700000001.000200"
    assert store.get_reply(reply_id) == found
    with pytest.raises(StorageError, match="no reply"):
        store.set_reply_platform_ref("nope", "x")


# Feedback ---------------------------------------------------------------------------------------


def test_feedback_upsert_withdraw_and_no_double_count(store: Store) -> None:
    reply_id = _reply(store)
    up, down = FeedbackValue.UP, FeedbackValue.DOWN
    assert store.feedback_for(reply_id) == {"up": 0, "down": 0}

    assert store.record_feedback(_feedback(reply_id, "U1", up, "e1")) is True
    assert store.record_feedback(_feedback(reply_id, "U1", up, "e2")) is False  # repeat
    assert store.feedback_for(reply_id) == {"up": 1, "down": 0}

    assert store.record_feedback(_feedback(reply_id, "U2", down, "e3")) is True
    assert store.feedback_for(reply_id) == {"up": 1, "down": 1}

    assert store.record_feedback(_feedback(reply_id, "U1", down, "e4")) is True  # changed
    assert store.feedback_for(reply_id) == {"up": 0, "down": 2}

    assert store.record_feedback(_feedback(reply_id, "U1", None, "e5")) is True  # withdrawn
    assert store.record_feedback(_feedback(reply_id, "U1", None, "e6")) is False
    assert store.feedback_for(reply_id) == {"up": 0, "down": 1}
    assert store.counts()["feedback"] == 1

    assert store.record_feedback(_feedback(reply_id, "U1", up, "e7")) is True  # again
    assert store.feedback_for(reply_id) == {"up": 1, "down": 1}
    assert store.feedback_for("nope") == {"up": 0, "down": 0}


def test_feedback_reason(store: Store) -> None:
    reply_id = _reply(store)
    down = FeedbackValue.DOWN
    assert store.record_feedback(_feedback(reply_id, "U1", down, "e1")) is True
    assert store.record_feedback(_feedback(reply_id, "U1", down, "e2", "outdated")) is True
    assert store.record_feedback(_feedback(reply_id, "U1", down, "e3", "outdated")) is False
    assert store.record_feedback(_feedback(reply_id, "U1", down, "e4")) is False
    assert store.feedback_for(reply_id) == {"up": 0, "down": 1}


def test_feedback_on_unknown_reply_fails(store: Store) -> None:
    with pytest.raises(StorageError, match="no reply"):
        store.record_feedback(_feedback("nope", "U1", FeedbackValue.UP))


def test_feedback_concurrent_clicks_count_once(store: Store) -> None:
    reply_id = _reply(store)
    results = _all_at_once(
        lambda: store.record_feedback(_feedback(reply_id, "U1", FeedbackValue.UP))
    )
    assert results.count(True) == 1
    assert store.feedback_for(reply_id) == {"up": 1, "down": 0}


# Stats ------------------------------------------------------------------------------------------


def test_counts(store: Store) -> None:
    assert store.counts() == dict.fromkeys(TABLE_NAMES, 0)
    conversation = store.get_or_create_conversation(KEY, "U1")
    message_id = store.add_message(conversation.id, Role.USER, "U1", "hi")
    reply_id = store.add_reply(conversation.id, message_id, Reply.smalltalk("hello"))
    store.record_feedback(_feedback(reply_id, "U1", FeedbackValue.UP))
    store.set_owner(conversation.id, Owner.HUMAN, "U1")
    store.claim_event("slack", "Ev1")
    assert store.counts() == {
        **dict.fromkeys(TABLE_NAMES, 0),
        "conversation": 1,
        "message": 2,
        "reply": 1,
        "feedback": 1,
        "handoff": 1,
        "processed_event": 1,
    }


def test_timestamps_read_back_as_aware_utc(store: Store) -> None:
    reply_id = _reply(store)
    plus_two = timezone(timedelta(hours=2))
    at_noon_plus_two = datetime(2024, 5, 1, 12, 0, tzinfo=plus_two)
    naive_utc = datetime(2024, 5, 1, 9, 30)  # taken as UTC
    store.record_feedback(
        FeedbackEvent("web", reply_id, "U1", FeedbackValue.UP, "e1", at=at_noon_plus_two)
    )
    store.record_feedback(
        FeedbackEvent("web", reply_id, "U2", FeedbackValue.UP, "e2", at=naive_utc)
    )
    with Session(store.engine) as session:
        rows = session.exec(select(Feedback).order_by(col(Feedback.user))).all()
        stamps = [row.created_at for row in rows]
    assert stamps == [
        datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    ]
    assert all(stamp.tzinfo is UTC for stamp in stamps)
