"""Knowledge gaps and failure classes from conversations run through the real engine and model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, col

from bot.model import (
    FeedbackEvent,
    FeedbackValue,
    InboundMessage,
    Owner,
    Reply,
    ReplyKind,
    Role,
    utcnow,
)
from bot.service import Services
from bot.storage.tables import ReplyRecord
from monitoring.gaps import (
    FailureKind,
    classify_failures,
    cluster_label,
    failure_counts,
    find_gaps,
    gap_questions,
)
from monitoring.review import ReviewQueue
from tests.support import sample_services

pytestmark = pytest.mark.model

# Questions the sample knowledge base has no entry for (fallbacks, clarifications or answers
# below LOW_CONFIDENCE with the sample's derived threshold of about 0.21).
GIFT = (
    "Do you sell gift cards?",
    "can I buy a gift voucher for a friend",
    "gift card for lumen notes subscription",
)
GREEN = (
    "does lumen have a carbon footprint report",
    "are your servers powered by renewable energy",
    "is lumen notes environmentally sustainable",
)
LOW_CONFIDENCE = 0.36


@pytest.fixture
def services(tmp_path: Path, sample_kb_dir: Path, embedder: object) -> Iterator[Services]:
    with sample_services(tmp_path, sample_kb_dir, embedder) as built:
        yield built


def ask(services: Services, text: str, conversation: str | None = None) -> Reply:
    message = InboundMessage(
        platform="web",
        workspace="",
        channel=conversation or uuid.uuid4().hex,
        user="ann",
        message_id=uuid.uuid4().hex,
        text=text,
    )
    (reply,) = services.engine.handle(message)
    return reply


def low_confidence(services: Services) -> float:
    return services.engine.responder.confidence.threshold + 0.1


def test_unanswered_questions_cluster_by_topic_with_a_trend(services: Services) -> None:
    replies = [ask(services, q) for q in (*GIFT, *GREEN)]
    assert all(
        r.kind is not ReplyKind.ANSWER or (r.confidence or 0) < LOW_CONFIDENCE for r in replies
    ), [(r.kind, r.confidence) for r in replies]
    answered = ask(services, "How do I reset my password?")
    assert answered.kind is ReplyKind.ANSWER and (answered.confidence or 0) > LOW_CONFIDENCE
    # One gift-card question was asked last week: it makes the trend, not this week's count.
    with Session(services.store.engine) as session:
        session.exec(
            update(ReplyRecord)
            .where(col(ReplyRecord.id) == replies[0].id)
            .values(created_at=utcnow() - timedelta(days=8))
        )
        session.commit()
    ask(services, GIFT[0])  # asked again this week
    until = utcnow() + timedelta(minutes=1)
    report = find_gaps(
        services.store.engine,
        services.kb.embedder,
        since=until - timedelta(days=7),
        until=until,
        low_confidence=LOW_CONFIDENCE,
    )
    assert report.total == 6
    assert report.previous_total == 1
    assert sum(report.reasons.values()) == 6
    assert set(report.reasons) <= {"unanswered", "low_confidence"}
    gift = [c for c in report.clusters if "gift" in " ".join(c.examples).lower()]
    assert len(gift) == 1, report.clusters
    (cluster,) = gift
    assert all("gift" in e.lower() for e in cluster.examples), report.clusters
    assert (cluster.count, cluster.previous, cluster.trend) == (3, 1, 2)
    assert "gift" in cluster.label
    assert len(set(cluster.examples)) == 3
    green = [c for c in report.clusters if c is not cluster]
    assert sum(c.count for c in green) == 3
    assert all(c.previous == 0 for c in green)
    assert report.clusters[0].count >= report.clusters[-1].count


def test_thumbs_down_and_low_confidence_count_as_gaps(services: Services) -> None:
    reply = ask(services, "How do I reset my password?")
    assert reply.kind is ReplyKind.ANSWER and reply.id is not None
    until = services.store.get_reply(reply.id).created_at + timedelta(minutes=1)  # type: ignore[union-attr]
    since = until - timedelta(days=1)
    assert gap_questions(services.store.engine, since, until, low_confidence=0.0) == []
    everything = gap_questions(services.store.engine, since, until, low_confidence=1.01)
    assert [q.reason.value for q in everything] == ["low_confidence"]
    services.engine.record_feedback(
        FeedbackEvent("web", reply.id, "ann", FeedbackValue.DOWN, "e1", reason="wrong_answer")
    )
    (question,) = gap_questions(services.store.engine, since, until, low_confidence=0.0)
    assert question.reason.value == "thumbs_down"
    assert question.text == "How do I reset my password?"


def test_cluster_labels_prefer_terms_that_set_a_cluster_apart() -> None:
    labels = cluster_label(
        [
            "refund my invoice please refund refund",
            "export notes to pdf export pdf",
            "the and of",
        ]
    )
    assert labels[0][0] == "refund"
    assert "pdf" in labels[1] or "export" in labels[1]
    assert labels[2] == ()


def failures_of(services: Services) -> dict[str, FailureKind]:
    now = utcnow()
    found = classify_failures(
        services.store.engine,
        since=now - timedelta(days=1),
        until=now + timedelta(minutes=1),
        retriever=services.retriever,
    )
    return {f.reply_id: f.kind for f in found}


def test_failure_classes(services: Services) -> None:
    store = services.store
    queue = ReviewQueue(store.engine, sample_rate=1.0)

    # Retrieval miss: a reviewer names an entry that is not in the top 5 for the question.
    miss = ask(services, "How do I reset my password?")
    assert miss.id is not None
    # Wrong decision: a 👎 on an answer with no better entry known (it should have abstained).
    wrong = ask(services, "How do I change the email address on my account?")
    assert wrong.kind is ReplyKind.ANSWER and wrong.id is not None
    services.engine.record_feedback(FeedbackEvent("web", wrong.id, "ann", FeedbackValue.DOWN, "e2"))
    # Outdated: the 👎 reason says so.
    old = ask(services, "How do I sign up for Lumen Notes?")
    assert old.id is not None
    services.engine.record_feedback(
        FeedbackEvent("web", old.id, "ann", FeedbackValue.DOWN, "e3", reason="outdated")
    )
    # Fallback an agent later answered with an entry in the top 5: a wrong decision.
    conversation = uuid.uuid4().hex
    fallback = ask(services, "forgot pasword cant log in help help", conversation)
    # Policy: the customer rejects a smalltalk reply.
    chat = uuid.uuid4().hex
    hello = ask(services, "hello there", chat)
    assert hello.kind is ReplyKind.SMALLTALK
    ask(services, "no, that's not what I asked, useless", chat)
    # Handoff that timed out.
    handed = uuid.uuid4().hex
    handoff = ask(services, "I want to talk to a human", handed)
    assert handoff.kind is ReplyKind.HANDOFF

    queue.sample()
    items = {e.reply_id: e.id for e in queue.entries(status="all")}
    queue.mark(items[miss.id], "wrong", reviewer="rita", expected_entry="no-such-entry")
    conv = store.find_conversation(
        InboundMessage("web", "", conversation, "ann", "x", "x").conversation
    )
    assert conv is not None
    store.add_message(
        conv.id,
        Role.AGENT,
        "agent-1",
        services.kb.entry("reset-password").answer,  # type: ignore[union-attr]
    )
    handed_conv = store.find_conversation(
        InboundMessage("web", "", handed, "ann", "x", "x").conversation
    )
    assert handed_conv is not None
    # What the relay records when nobody claims a handoff in time.
    store.record_handoff(handed_conv.id, Owner.HUMAN, Owner.BOT, actor="relay", reason="timeout")

    kinds = failures_of(services)
    assert kinds[miss.id] is FailureKind.RETRIEVAL_MISS
    assert kinds[wrong.id] is FailureKind.WRONG_DECISION
    assert kinds[old.id] is FailureKind.OUTDATED
    assert hello.id is not None and kinds[hello.id] is FailureKind.POLICY
    assert handoff.id is not None and kinds[handoff.id] is FailureKind.HANDOFF
    if fallback.kind is not ReplyKind.ANSWER:
        assert fallback.id is not None
        assert kinds[fallback.id] is FailureKind.WRONG_DECISION
    counts = failure_counts(
        list(
            classify_failures(
                store.engine,
                since=store.get_reply(miss.id).created_at - timedelta(minutes=1),  # type: ignore[union-attr]
                until=store.get_reply(miss.id).created_at + timedelta(hours=1),  # type: ignore[union-attr]
            )
        )
    )
    assert set(counts) == {k.value for k in FailureKind}
    assert sum(counts.values()) >= 5
