"""Knowledge policies: answer, never the same answer twice, clarify, fall back, offer a person."""

from __future__ import annotations

import pytest

from bot.model import ActionKind, Reply, ReplyKind
from policies.knowledge import Clarify, Fallback, KnowledgeAnswer, RepeatedQuestion
from policies.state import HandoffReason, KnowledgeResult, Outcome
from tests.policies.builders import (
    answer,
    bot,
    clarify,
    fallback,
    make,
    source,
    state,
    texts,
    turn,
    user,
)

MISS = ReplyKind.FALLBACK


# Knowledge answer -------------------------------------------------------------------------------


def test_a_fresh_confident_answer_is_given() -> None:
    proposal = answer("export-pdf")
    policy = make(KnowledgeAnswer)

    assert policy.applies(turn("pdf?", knowledge=proposal), state())
    decision = policy.decide(turn("pdf?", knowledge=proposal), state())
    assert decision is not None
    assert decision.outcome is Outcome.REPLY
    assert decision.reply == proposal.reply


def test_the_same_answer_again_is_not_given() -> None:
    answered = state(user("pdf?"), bot("A", entry="export-pdf"))
    assert not make(KnowledgeAnswer).applies(turn("pdf?", knowledge=answer("export-pdf")), answered)


@pytest.mark.parametrize("proposal", [clarify(source("a"), source("b")), fallback()])
def test_no_answer_for_clarify_or_fallback(proposal: KnowledgeResult) -> None:
    assert not make(KnowledgeAnswer).applies(turn("q", knowledge=proposal), state())


def test_unsearched_replies_pass_through() -> None:
    too_long = KnowledgeResult(Reply.fallback("That message is too long"), "", (), searched=False)
    decision = make(KnowledgeAnswer).decide(turn("x" * 5000, knowledge=too_long), state())
    assert decision is not None and decision.reply == too_long.reply


def test_a_handoff_proposed_by_the_knowledge_path_is_a_handoff() -> None:
    proposal = KnowledgeResult(Reply.handoff("A colleague will help."), "q", (), searched=False)
    decision = make(KnowledgeAnswer).decide(turn("refund", knowledge=proposal), state())
    assert decision is not None
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.KNOWLEDGE


# Repeated question ------------------------------------------------------------------------------

ANSWERED = (user("How do I export as PDF?"), bot("The PDF answer", entry="export-pdf"))


def test_repeat_offers_other_close_topics_and_a_person() -> None:
    proposal = answer(
        "export-pdf",
        source("export-markdown", 0.7, "Export as Markdown"),
        source("share-note", 0.5, "Share a note"),
        source("export-pdf", 0.6),  # the answered entry is never offered again
        source("far-away", 0.2, "Unrelated"),
    )
    repeat = turn("How do I export as PDF??", knowledge=proposal)
    policy = make(RepeatedQuestion)

    assert policy.applies(repeat, state(*ANSWERED))
    decision = policy.decide(repeat, state(*ANSWERED))

    assert decision is not None and decision.reply is not None
    assert decision.outcome is Outcome.REPLY
    assert decision.reply.kind is ReplyKind.CLARIFY
    assert decision.reply.text != "The PDF answer"
    assert "“Export Pdf”" in decision.reply.text
    assert "• Export as Markdown" in decision.reply.text
    assert [s.id for s in decision.reply.sources] == ["export-markdown", "share-note"]
    kinds = [a.kind for a in decision.reply.actions]
    assert kinds == [ActionKind.CHOOSE, ActionKind.CHOOSE, ActionKind.HANDOFF]


def test_repeat_with_no_other_topic_offers_a_person() -> None:
    repeat = turn("pdf export??", knowledge=answer("export-pdf", source("far", 0.1)))

    decision = make(RepeatedQuestion).decide(repeat, state(*ANSWERED))

    assert decision is not None and decision.reply is not None
    assert decision.reply.kind is ReplyKind.FALLBACK
    assert "already shared" in decision.reply.text
    assert "person" in decision.reply.text
    assert [a.kind for a in decision.reply.actions] == [ActionKind.HANDOFF]


def test_repeat_after_a_miss_offers_a_person_instead_of_the_same_topics_again() -> None:
    proposal = answer("export-pdf", source("export-markdown", 0.7, "Export as Markdown"))
    clarified = state(*ANSWERED, user("pdf??"), bot("already shared…", ReplyKind.CLARIFY))

    decision = make(RepeatedQuestion).decide(turn("pdf???", knowledge=proposal), clarified)

    assert decision is not None and decision.reply is not None
    assert decision.reply.kind is ReplyKind.FALLBACK
    assert decision.reply.text == texts().offer_person


def test_repeat_options_respect_max_options_and_similarity() -> None:
    overrides = {"repeat": {"max_options": 1, "min_similarity": 0.65}}
    proposal = answer("export-pdf", source("a", 0.7), source("b", 0.69))

    decision = make(RepeatedQuestion, overrides).decide(
        turn("?", knowledge=proposal), state(*ANSWERED)
    )

    assert decision is not None and decision.reply is not None
    assert [s.id for s in decision.reply.sources] == ["a"]


def test_a_new_entry_is_not_a_repeat() -> None:
    assert not make(RepeatedQuestion).applies(
        turn("markdown?", knowledge=answer("export-markdown")), state(*ANSWERED)
    )


# Clarify ----------------------------------------------------------------------------------------


def test_clarify_names_the_close_topics_in_the_channel_wording() -> None:
    proposal = clarify(
        source("pricing-plus", 0.6, "Plus"), source("pricing-business", 0.55, "Business")
    )
    overrides = {"persona": {"tone": "formal"}}

    decision = make(Clarify, overrides).decide(turn("price?", knowledge=proposal), state())

    assert decision is not None and decision.reply is not None
    assert decision.reply.kind is ReplyKind.CLARIFY
    assert decision.reply.text.splitlines() == [texts(overrides).clarify, "• Plus", "• Business"]
    assert decision.reply.sources == proposal.reply.sources


# Fallback and misses ----------------------------------------------------------------------------


def test_first_miss_apologises_and_offers_a_person() -> None:
    decision = make(Fallback).decide(turn("weather?", knowledge=fallback()), state())

    assert decision.reply is not None
    assert decision.reply.kind is MISS
    assert decision.reply.text.startswith("Sorry")
    assert "person" in decision.reply.text
    assert [a.kind for a in decision.reply.actions] == [ActionKind.HANDOFF]


def test_second_miss_in_a_row_does_not_apologise_again() -> None:
    overrides = {"fallback": {"misses_before_offer": 5}}
    one_miss = state(user("weather?"), bot("Sorry…", MISS))

    decision = make(Fallback, overrides).decide(turn("lasagna?", knowledge=fallback()), one_miss)

    assert decision.reply is not None
    assert decision.reply.text == texts(overrides).fallback_again
    assert "sorry" not in decision.reply.text.lower()
    assert "apolog" not in decision.reply.text.lower()


def test_offer_a_person_after_n_misses_in_a_row() -> None:
    one_miss = state(user("weather?"), bot("Sorry…", MISS))

    decision = make(Fallback).decide(turn("lasagna?", knowledge=fallback()), one_miss)

    assert decision.outcome is Outcome.REPLY
    assert decision.reply is not None
    assert decision.reply.text == texts().offer_person
    assert "sorry" not in decision.reply.text.lower()


def test_perform_the_handoff_after_n_misses_when_configured() -> None:
    overrides = {"fallback": {"misses_before_offer": 2, "handoff_on_misses": "perform"}}
    one_miss = state(user("weather?"), bot("Sorry…", MISS))

    decision = make(Fallback, overrides).decide(turn("lasagna?", knowledge=fallback()), one_miss)

    assert decision.outcome is Outcome.HANDOFF
    assert decision.reason == "repeated_misses:2"


def test_offer_is_made_once_per_run_of_misses() -> None:
    offered = state(user("a"), bot("Sorry", MISS), user("b"), bot("offer", MISS))

    decision = make(Fallback).decide(turn("c", knowledge=fallback()), offered)

    assert decision.reply is not None
    assert decision.reply.text == texts().fallback_again


def test_clarifications_count_as_misses() -> None:
    clarified = state(user("a"), bot("which?", ReplyKind.CLARIFY))
    decision = make(Fallback).decide(turn("b", knowledge=fallback()), clarified)
    assert decision.reply is not None and decision.reply.text == texts().offer_person


def test_an_answer_ends_the_run_of_misses() -> None:
    history = state(user("a"), bot("Sorry", MISS), user("b"), bot("A", entry="x"))
    decision = make(Fallback).decide(turn("c", knowledge=fallback()), history)
    assert decision.reply is not None and decision.reply.text == texts().fallback


def test_fallback_always_applies_even_without_knowledge() -> None:
    policy = make(Fallback)
    assert policy.applies(turn("x"), state())
    assert policy.decide(turn("x"), state()).outcome is Outcome.REPLY
