"""The review queue on a real SQLite database: sampling, QA flags, marks and reviewed accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.model import ConversationKey, Reply, Role, Source
from bot.storage.store import Store
from monitoring.review import ReviewError, ReviewQueue, Verdict, is_sampled


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}")
    yield opened
    opened.close()


def add_replies(store: Store, n: int, kind: str = "answer") -> list[str]:
    conversation = store.get_or_create_conversation(ConversationKey("web", "", f"c-{kind}"), "ann")
    ids = []
    for i in range(n):
        message = store.add_message(conversation.id, Role.USER, "ann", f"question {i}")
        if kind == "answer":
            reply = Reply.answer(f"answer {i}", (Source("reset-password", 0.8),), 0.8)
        elif kind == "smalltalk":
            reply = Reply.smalltalk("Hello!")
        else:
            reply = Reply.fallback("Sorry, I don't know.", 0.2)
        ids.append(store.add_reply(conversation.id, message, reply, query=f"question {i}"))
    return ids


def test_sampling_is_deterministic_and_near_the_rate() -> None:
    ids = [f"reply-{i}" for i in range(4000)]
    drawn = [i for i in ids if is_sampled(i, 0.1)]
    assert 0.08 < len(drawn) / len(ids) < 0.12
    assert drawn == [i for i in ids if is_sampled(i, 0.1)]
    assert not any(is_sampled(i, 0.0) for i in ids[:50])
    assert all(is_sampled(i, 1.0) for i in ids[:50])


def test_sample_queues_each_reply_once_and_skips_smalltalk(store: Store) -> None:
    answers = add_replies(store, 5)
    add_replies(store, 3, kind="smalltalk")
    queue = ReviewQueue(store.engine, sample_rate=1.0)
    assert queue.sample() == 5
    assert queue.sample() == 0
    entries = queue.entries(status="pending")
    assert sorted(e.reply_id for e in entries) == sorted(answers)
    assert all(e.sampled and e.reasons == "sampled" for e in entries)
    assert entries[0].question.startswith("question ")
    assert entries[0].sources == ("reset-password",)


def test_bad_rate_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="SUPPORTBOT_REVIEW_SAMPLE_RATE"):
        ReviewQueue(store.engine, sample_rate=1.5)


def test_flag_adds_updates_and_clears_violations(store: Store) -> None:
    (reply,) = add_replies(store, 1)
    queue = ReviewQueue(store.engine, sample_rate=0.0)
    assert not queue.flag(reply, [])
    assert queue.count() == 0
    assert queue.flag(reply, [{"rule": "length", "detail": "2000 characters"}])
    assert queue.flag(reply, [{"rule": "caps", "detail": "ALL CAPS: NEVER"}])
    (entry,) = queue.entries(only_flagged=True)
    assert entry.violations == ({"rule": "caps", "detail": "ALL CAPS: NEVER"},)
    assert entry.reasons == "qa: caps"
    assert not entry.sampled
    assert not queue.flag(reply, [])
    assert queue.entries(only_flagged=True) == []
    assert queue.count() == 1


def test_marks_feed_reviewed_accuracy_of_sampled_items_only(store: Store) -> None:
    replies = add_replies(store, 4)
    (flagged_only,) = add_replies(store, 1, kind="fallback")
    queue = ReviewQueue(store.engine, sample_rate=1.0)
    queue.sample(since=None)
    # A QA-flagged reply that was not sampled must not bias the accuracy.
    unsampled = ReviewQueue(store.engine, sample_rate=0.0, kinds=("answer",))
    items = {e.reply_id: e.id for e in queue.entries(status="all")}
    queue.mark(items[replies[0]], Verdict.RIGHT, reviewer="rita")
    queue.mark(items[replies[1]], "right", reviewer="rita")
    marked = queue.mark(
        items[replies[2]], "wrong", reviewer="rita", note=" outdated price ", expected_entry="plans"
    )
    assert (marked.verdict, marked.note, marked.expected_entry) == (
        "wrong",
        "outdated price",
        "plans",
    )
    assert marked.reviewed_at is not None
    accuracy = queue.accuracy()
    assert (accuracy.right, accuracy.wrong, accuracy.pending) == (2, 1, 2)
    assert accuracy.accuracy == pytest.approx(2 / 3)
    assert unsampled.accuracy().reviewed == 3
    assert queue.verdicts(replies).keys() == {replies[0], replies[1], replies[2]}
    assert flagged_only in {e.reply_id for e in queue.entries(status="pending")}
    # A later mark replaces the earlier one.
    queue.mark(items[replies[2]], "right", reviewer="sam")
    assert queue.accuracy().wrong == 0


def test_mark_errors_say_what_to_do(store: Store) -> None:
    add_replies(store, 1)
    queue = ReviewQueue(store.engine, sample_rate=1.0)
    queue.sample()
    (entry,) = queue.entries()
    with pytest.raises(ReviewError, match="right' or 'wrong"):
        queue.mark(entry.id, "maybe", reviewer="x")
    with pytest.raises(ReviewError, match="supportbot review list"):
        queue.mark(9999, "right", reviewer="x")
    with pytest.raises(ReviewError, match="unknown status"):
        queue.entries(status="done")
