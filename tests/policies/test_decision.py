"""Tests for policies.decision: answer, clarify or fall back, on hand-built retrievals."""

from __future__ import annotations

import dataclasses

import pytest

from bot.model import ReplyKind
from knowledge.retriever import Candidate, Retrieval
from knowledge.types import DECLINE_TAG, Entry
from policies.decision import Decision, DecisionConfig, decide

THRESHOLD = 0.5
# Margins and similarities are powers of two apart so the boundary cases are exact in floats.
CONFIG = DecisionConfig(clarify_floor=0.5, clarify_margin=0.125, max_options=3)


def _candidate(
    entry_id: str, dense: float, title: str | None = None, question: str | None = None
) -> Candidate:
    entry = Entry(id=entry_id, answer=f"answer {entry_id}", title=title, question=question)
    return Candidate(entry, score=dense, dense=dense, share=0.5, lexical=0.0, votes=1)


def _retrieval(*candidates: Candidate) -> Retrieval:
    return Retrieval("query", tuple(candidates), (0.0,) * 5)


PLUS = _candidate("pricing-plus", 0.75, title="Plus plan pricing")
BUSINESS = _candidate("pricing-business", 0.6875, title="Business plan pricing")
FREE = _candidate("pricing-free", 0.625, title="Free plan")
FAR = _candidate("upgrade", 0.5, title="Upgrade")
TWO_CLOSE = _retrieval(PLUS, BUSINESS, FAR)


def test_no_candidates_fall_back_with_zero_confidence() -> None:
    decision = decide(_retrieval(), 0.99, THRESHOLD, CONFIG)
    assert decision == Decision(ReplyKind.FALLBACK, 0.0, ())
    assert not decision.answered


@pytest.mark.parametrize("confidence", [THRESHOLD, 0.51, 1.0])
def test_at_or_above_the_threshold_answers_with_the_best(confidence: float) -> None:
    decision = decide(TWO_CLOSE, confidence, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.ANSWER
    assert decision.answered
    assert decision.candidates == (PLUS,)
    assert decision.confidence == confidence


def test_just_below_the_threshold_with_two_close_topics_clarifies() -> None:
    decision = decide(TWO_CLOSE, 0.4999, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.CLARIFY
    assert decision.candidates == (PLUS, BUSINESS)
    assert decision.confidence == 0.4999
    assert not decision.answered


def test_clarify_floor_is_inclusive() -> None:
    floor = THRESHOLD * CONFIG.clarify_floor
    assert decide(TWO_CLOSE, floor, THRESHOLD, CONFIG).kind is ReplyKind.CLARIFY
    below = decide(TWO_CLOSE, floor - 1e-9, THRESHOLD, CONFIG)
    assert below.kind is ReplyKind.FALLBACK
    assert below.candidates == (PLUS, BUSINESS, FAR)


def test_margin_is_inclusive() -> None:
    at_margin = _retrieval(PLUS, FREE)  # 0.75 - 0.625 == clarify_margin exactly
    assert decide(at_margin, 0.3, THRESHOLD, CONFIG).kind is ReplyKind.CLARIFY
    beyond = _retrieval(PLUS, dataclasses.replace(FREE, dense=0.625 - 1e-6))
    assert decide(beyond, 0.3, THRESHOLD, CONFIG).kind is ReplyKind.FALLBACK


def test_one_close_candidate_falls_back() -> None:
    decision = decide(_retrieval(PLUS, FAR), 0.4, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.FALLBACK
    assert decision.candidates == (PLUS, FAR)


def test_close_candidates_on_the_same_topic_fall_back() -> None:
    twin = _candidate("pricing-plus-2", 0.74, title="Plus plan pricing")
    decision = decide(_retrieval(PLUS, twin), 0.4, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.FALLBACK


def test_topics_fall_back_to_question_then_id() -> None:
    by_question = _retrieval(
        _candidate("a", 0.7, question="How do I export to PDF?"),
        _candidate("b", 0.69, question="How do I export to Markdown?"),
    )
    assert decide(by_question, 0.4, THRESHOLD, CONFIG).kind is ReplyKind.CLARIFY
    by_id = _retrieval(_candidate("a", 0.7), _candidate("b", 0.69))
    assert decide(by_id, 0.4, THRESHOLD, CONFIG).kind is ReplyKind.CLARIFY


def test_clarify_offers_at_most_max_options() -> None:
    many = _retrieval(*(_candidate(f"e{i}", 0.75 - i / 64, title=f"Topic {i}") for i in range(5)))
    decision = decide(many, 0.4, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.CLARIFY
    assert [c.entry.id for c in decision.candidates] == ["e0", "e1", "e2"]
    two = decide(many, 0.4, THRESHOLD, dataclasses.replace(CONFIG, max_options=2))
    assert [c.entry.id for c in two.candidates] == ["e0", "e1"]


def test_candidates_without_similarity_are_never_offered() -> None:
    # Lexical-only hits (dense 0) are not "close" even when the best is weak too.
    weak = _retrieval(_candidate("a", 0.05, title="A"), _candidate("b", 0.0, title="B"))
    assert decide(weak, 0.4, THRESHOLD, CONFIG).kind is ReplyKind.FALLBACK


def test_fallback_keeps_the_top_three_for_suggestions() -> None:
    decision = decide(_retrieval(PLUS, FAR, FREE, BUSINESS), 0.1, THRESHOLD, CONFIG)
    assert decision.kind is ReplyKind.FALLBACK
    assert decision.candidates == (PLUS, FAR, FREE)
    assert decision.confidence == 0.1


def test_default_config_is_used_when_none_is_given() -> None:
    default = DecisionConfig()
    close = _retrieval(
        _candidate("a", 0.8, title="A"), _candidate("b", 0.8 - default.clarify_margin / 2, "B")
    )
    floor = THRESHOLD * default.clarify_floor
    assert decide(close, floor, THRESHOLD).kind is ReplyKind.CLARIFY
    assert decide(close, floor * 0.99, THRESHOLD).kind is ReplyKind.FALLBACK


def _declining(dense: float) -> Candidate:
    entry = Entry(id="out-of-scope", answer="-", title="Not here", tags=(DECLINE_TAG,))
    return Candidate(entry, score=dense, dense=dense, share=0.5, lexical=0.0, votes=1)


def test_a_declining_entry_ranked_first_falls_back_however_sure() -> None:
    decision = decide(_retrieval(_declining(0.8), PLUS, BUSINESS), 0.99, THRESHOLD, CONFIG)
    assert decision == Decision(ReplyKind.FALLBACK, 0.99, ())
    assert not decision.answered


def test_a_declining_entry_further_down_is_never_offered() -> None:
    declining = _declining(0.7)
    answered = decide(_retrieval(PLUS, declining, BUSINESS), 0.9, THRESHOLD, CONFIG)
    assert answered.candidates == (PLUS,)
    clarified = decide(_retrieval(PLUS, declining, BUSINESS), 0.4, THRESHOLD, CONFIG)
    assert clarified.kind is ReplyKind.CLARIFY
    assert clarified.candidates == (PLUS, BUSINESS)
    fallback = decide(_retrieval(PLUS, declining, FAR), 0.1, THRESHOLD, CONFIG)
    assert declining not in fallback.candidates
