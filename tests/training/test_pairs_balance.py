"""Pairs with their labels, topics, caps, and a split that never leaks a conversation."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from training.balance import assign_topics, balance, split_by_time
from training.clean import clean
from training.importers import ImportResult
from training.model import Conversation, Signals, Turn
from training.pairs import Pair, build_pairs


@pytest.fixture(scope="module")
def pairs(imported: ImportResult) -> list[Pair]:
    conversations, _ = clean(imported)
    return build_pairs(conversations)


def test_pairs_carry_context_and_resolution_signals(pairs: list[Pair]) -> None:
    by_conversation = {p.conversation_id: p for p in pairs}
    sync = by_conversation["slack:C01SUPPORT:1709280100.000200"]
    # The 👎 bot answer is no positive: it is the agent's answer's hard negative.
    assert sync.answer_role == "agent"
    assert sync.rejected is not None and sync.rejected.startswith("Sync runs every few minutes")
    assert [c["role"] for c in sync.context] == ["customer", "bot"]
    assert sync.resolved is True and sync.feedback == "up" and sync.after_handoff is True
    assert not any(p.answer.startswith("Sync runs every few minutes") for p in pairs)
    offline = [p for p in pairs if p.conversation_id.endswith(":1210000000000000005")]
    assert [p.answer_role for p in offline] == ["bot", "agent"]
    assert offline[0].feedback == "up"
    assert offline[1].context[0]["text"].startswith("Does Lumen work offline?")


def test_short_answers_non_answers_and_thanks_make_no_pairs() -> None:
    conversation = Conversation(
        "c",
        "t",
        "web",
        (
            Turn.customer("u", "Can I get a refund?"),
            Turn.bot("b", "Let me get a person for you.", kind="handoff"),
            Turn.customer("u", "ok"),
            Turn.agent("a", "Done."),
            Turn.customer("u", "and the invoice?"),
            Turn.agent("a", "It is in Account > Billing."),
            Turn.customer("u", "perfect, that worked, thanks!"),
            Turn.agent("a", "You're welcome, happy to help any time!"),
        ),
        Signals(),
    )
    (pair,) = build_pairs([conversation])
    assert pair.question == "and the invoice?" and pair.answer == "It is in Account > Billing."
    assert pair.after_handoff is True  # the bot had been in the conversation


def _pairs(n_conversations: int, topic: str, platform: str, start: datetime) -> list[Pair]:
    return [
        Pair(
            id=f"{topic}-{i}#0",
            conversation_id=f"{topic}-{i}",
            platform=platform,
            question=f"question {i} about {topic}",
            context=(),
            answer=f"answer {i}",
            answer_role="agent",
            time=start + timedelta(hours=i),
            topic=topic,
            resolved=i % 2 == 0,
        )
        for i in range(n_conversations)
    ]


def test_split_keeps_conversations_whole_and_test_later_than_train() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = _pairs(20, "billing", "slack", start)
    # A second pair in some conversations.
    items += [
        Pair(
            id=f"{p.conversation_id}#1",
            conversation_id=p.conversation_id,
            platform=p.platform,
            question="and then?",
            context=(),
            answer="then this",
            answer_role="agent",
            time=(p.time or start) + timedelta(minutes=5),
        )
        for p in items[::3]
    ]
    split = split_by_time(items, 0.25)
    train_ids = {p.conversation_id for p in split.train}
    test_ids = {p.conversation_id for p in split.test}
    assert train_ids.isdisjoint(test_ids)
    assert len(test_ids) == 5
    assert max(p.time for p in split.train if p.time) < min(p.time for p in split.test if p.time)


def test_balance_caps_topics_and_platforms_and_reports_both() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = _pairs(40, "billing", "slack", start) + _pairs(6, "login", "discord", start)
    split, report = balance(items, cap_topic=12, cap_platform=30, min_topic=8, test_fraction=0.2)
    assert report.topics_before == Counter({"billing": 40, "login": 6})
    after = Counter(p.topic for p in [*split.train, *split.test])
    assert after["billing"] == 12
    # Resolved pairs are kept first when a topic is capped.
    assert all(p.resolved for p in split.train + split.test if p.topic == "billing")
    train_login = [p for p in split.train if p.topic == "login"]
    assert len(train_login) == 8 and report.oversampled > 0
    # Copies live in train only, and never share a conversation with test.
    test_ids = {p.conversation_id for p in split.test}
    assert all(p.conversation_id not in test_ids for p in split.train)
    data = report.to_json()
    assert data["topics"]["billing"] == {"before": 40, "after": 12}
    assert len(report.tables()) == 2


def test_balance_on_real_pairs_never_leaks(pairs: list[Pair]) -> None:
    labelled, method = assign_topics(pairs, None)
    assert method == "single"
    split, report = balance(labelled, test_fraction=0.3)
    assert {p.conversation_id for p in split.train}.isdisjoint(
        {p.conversation_id for p in split.test}
    )
    assert report.train + report.test == len(pairs)


def test_intents_are_topics_when_every_pair_has_one(pairs: list[Pair]) -> None:
    from dataclasses import replace

    labelled, method = assign_topics([replace(p, intent="billing") for p in pairs], None)
    assert method == "intent" and {p.topic for p in labelled} == {"billing"}


@pytest.mark.model
def test_kmeans_topics_separate_what_customers_ask(embedder) -> None:  # type: ignore[no-untyped-def]
    questions = [
        "How do I get a refund for a double charge?",
        "I was charged twice, can I have my money back?",
        "Refund my last payment please",
        "Why was my card billed two times?",
        "I forgot my password and cannot sign in",
        "The password reset email never arrives",
        "How do I reset my password?",
        "Locked out of my account after a password change",
    ]
    items = [
        Pair(f"q{i}#0", f"q{i}", "web", q, (), "an answer here", "agent")
        for i, q in enumerate(questions)
    ]
    labelled, method = assign_topics(items, embedder, k=2)
    assert method == "kmeans"
    topics = [p.topic for p in labelled]
    assert len(set(topics[:4])) == 1 and len(set(topics[4:])) == 1 and topics[0] != topics[4]
    assert any("password" in (t or "") for t in topics[4:])
