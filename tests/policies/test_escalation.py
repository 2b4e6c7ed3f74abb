"""Escalation triggers: explicit requests, keywords and topics, 👎 then a repeat, sentiment."""

from __future__ import annotations

import pytest

from bot.model import ReplyKind
from policies.escalation import (
    EscalationTopics,
    ExplicitRequest,
    NegativeSentiment,
    ThumbsDownRepeat,
    handoff_question,
)
from policies.state import HandoffReason, KnowledgeResult, Outcome
from tests.policies.builders import (
    answer,
    bot,
    clarify,
    fallback,
    make,
    settings,
    source,
    state,
    texts,
    turn,
    user,
)

# Explicit request -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("Can I talk to a human?", "human"),
        ("agent", "agent"),
        ("I want a real person", "real person"),
        ("let me talk to someone please", "talk to someone"),
        ("I'd like to talk to a person", "talk to a person"),
    ],
)
def test_explicit_request_hands_over(text: str, detail: str) -> None:
    policy = make(ExplicitRequest)
    assert policy.applies(turn(text), state())

    decision = policy.decide(turn(text), state())

    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.CUSTOMER_REQUEST
    assert decision.reason.startswith("customer_request:")
    assert decision.reply is not None and decision.reply.kind is ReplyKind.HANDOFF
    assert decision.reply.text == texts().handoff


def test_yes_to_the_offer_of_a_person_hands_over() -> None:
    offered = state(user("weather?"), bot("Sorry… bring in a person?", ReplyKind.FALLBACK))
    policy = make(ExplicitRequest)

    assert policy.applies(turn("yes please"), offered)
    assert policy.decide(turn("yes please"), offered).reason == "customer_request:accepted offer"
    # "yes" after an answer is not a request for a person.
    assert not policy.applies(turn("yes"), state(user("q"), bot("A", entry="x")))


def test_no_request() -> None:
    assert not make(ExplicitRequest).applies(turn("How do I export a note?"), state())


def test_configured_request_phrases() -> None:
    policy = make(ExplicitRequest, {"escalation": {"request_phrases": ["operator"]}})
    assert policy.applies(turn("OPERATOR!"), state())
    assert not policy.applies(turn("human"), state())


# Keywords and topics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I was charged twice this month", "topic:billing_dispute"),
        ("I'll file a chargeback", "topic:billing_dispute"),
        ("I want to terminate my contract", "topic:cancellation"),
        ("my lawyer will hear about this", "topic:legal"),
    ],
)
def test_default_topics(text: str, reason: str) -> None:
    policy = make(EscalationTopics)
    assert policy.applies(turn(text), state())
    decision = policy.decide(turn(text), state())
    assert decision is not None
    assert decision.outcome is Outcome.HANDOFF
    assert decision.reason == reason


def test_keywords_come_before_topics() -> None:
    policy = make(EscalationTopics, {"escalation": {"keywords": ["urgent"]}})
    decision = policy.decide(turn("URGENT: chargeback"), state())
    assert decision is not None and decision.reason == "keyword:urgent"


@pytest.mark.parametrize(
    "text", ["How do I cancel my subscription?", "Can I get a refund?", "what plans are there"]
)
def test_questions_the_knowledge_base_answers_are_not_escalated(text: str) -> None:
    assert not make(EscalationTopics).applies(turn(text), state())


# 👎 then the same question --------------------------------------------------------------------

DOWNVOTED = (user("How do I export a note as PDF?"), bot("A", entry="export-pdf", downvoted=True))


def test_thumbs_down_then_the_same_entry_hands_over() -> None:
    policy = make(ThumbsDownRepeat)
    repeat = turn("pdf export not working", knowledge=answer("export-pdf"))

    assert policy.applies(repeat, state(*DOWNVOTED))
    decision = policy.decide(repeat, state(*DOWNVOTED))
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.THUMBS_DOWN_REPEAT


def test_thumbs_down_then_the_same_words_hands_over() -> None:
    repeat = turn("how do I export a note as PDF", knowledge=fallback())
    assert make(ThumbsDownRepeat).applies(repeat, state(*DOWNVOTED))


def test_thumbs_down_then_another_question_does_not() -> None:
    other = turn("How do I reset my password?", knowledge=answer("reset-password"))
    assert not make(ThumbsDownRepeat).applies(other, state(*DOWNVOTED))


def test_repeat_without_a_thumbs_down_does_not() -> None:
    liked = state(user("How do I export a note as PDF?"), bot("A", entry="export-pdf"))
    repeat = turn("How do I export a note as PDF?", knowledge=answer("export-pdf"))
    assert not make(ThumbsDownRepeat).applies(repeat, liked)


# Negative sentiment -----------------------------------------------------------------------------


def test_upset_customer_without_a_good_answer_is_handed_over() -> None:
    policy = make(NegativeSentiment)
    upset = turn("This is useless and I am furious", sentiment=-0.88, knowledge=fallback())

    assert policy.applies(upset, state())
    decision = policy.decide(upset, state())
    assert decision.outcome is Outcome.HANDOFF
    assert decision.reason == "negative_sentiment:-0.88"


def test_upset_customer_with_a_fresh_confident_answer_gets_the_answer() -> None:
    upset = turn("I hate that I can't reset my password", sentiment=-0.8, knowledge=answer("x"))
    assert not make(NegativeSentiment).applies(upset, state())


@pytest.mark.parametrize(
    "knowledge",
    [clarify(source("a"), source("b")), answer("reset-password")],
    ids=["clarify", "same"],
)
def test_upset_customer_with_a_clarification_or_the_same_answer_is_handed_over(
    knowledge: KnowledgeResult,
) -> None:
    answered = state(user("q"), bot("A", entry="reset-password"))
    upset = turn("still broken, awful", sentiment=-0.7, knowledge=knowledge)
    assert make(NegativeSentiment).applies(upset, answered)


def test_sentiment_threshold_and_switch() -> None:
    mild = turn("a bit annoying", sentiment=-0.3, knowledge=fallback())
    assert not make(NegativeSentiment).applies(mild, state())
    assert make(NegativeSentiment, {"sentiment": {"threshold": -0.2}}).applies(mild, state())
    off = make(NegativeSentiment, {"sentiment": {"enabled": False}})
    assert not off.applies(turn("awful", sentiment=-0.99, knowledge=fallback()), state())


# The question for the person --------------------------------------------------------------------


def test_handoff_question_is_the_earlier_question_when_the_turn_only_asks_for_a_person() -> None:
    phrases = settings().escalation.request_phrases
    history = state(user("hello"), bot(kind=ReplyKind.SMALLTALK), user("My invoices are wrong"))

    assert handoff_question("I'd like to talk to a person", history, phrases) == (
        "My invoices are wrong"
    )
    assert handoff_question("yes please", history, phrases) == "My invoices are wrong"
    assert handoff_question("my lawyer will call", history, phrases) == "my lawyer will call"
    assert handoff_question("human", state(), phrases) == "human"
