"""Tests for bot.context: spotting follow-ups and building their context from the history."""

from __future__ import annotations

import pytest

from bot.context import BOT_CONTEXT_CHARS, context_for, looks_like_follow_up
from bot.model import ReplyKind, Role, Turn
from knowledge.types import Context, Entry

PLUS_Q = "How much does the Plus plan cost?"
PLUS_A = (
    "Plus costs $8 per user per month billed monthly. It adds 50 GB of storage per user! "
    "Prices are shown in USD."
)


@pytest.mark.parametrize(
    "text",
    [
        "and for business?",
        "And for Business accounts?",
        "what about the desktop app?",
        "What about Android",
        "does it work offline?",
        "how about annual billing?",
        "also on Linux?",
        "is that available on Free?",
        "pricing?",  # three words or fewer lean on what came before
        "for teams",
        "Can I share those with guests?",  # short, and "those" points back
    ],
)
def test_follow_ups(text: str) -> None:
    assert looks_like_follow_up(text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I export my notes to PDF?",
        "Which payment methods do you accept for the Business plan?",
        "Android app doesn't sync my notes since the last update",  # "and" inside a word
        "Sorry, how do I change the email on my account?",  # "so" inside a word
        "How do I share this note with everyone in my whole team?",  # long: "this" is local
        "",
        "?!",
    ],
)
def test_standalone_questions(text: str) -> None:
    assert not looks_like_follow_up(text)


def test_empty_history_has_no_context() -> None:
    assert context_for([]) is None
    assert context_for([], topic_of=lambda text: Entry("never", "never")) is None


def test_context_is_the_last_question_and_the_first_sentence_of_the_reply() -> None:
    history = [Turn(Role.USER, PLUS_Q), Turn(Role.BOT, PLUS_A)]
    context = context_for(history)
    assert context == Context(PLUS_Q, "Plus costs $8 per user per month billed monthly.")
    assert context.text == f"{PLUS_Q} Plus costs $8 per user per month billed monthly."


def test_the_answering_entry_s_question_is_the_topic() -> None:
    seen: list[str] = []

    def topic_of(text: str) -> Entry | None:
        seen.append(text)
        return Entry("pricing-plus", PLUS_A, question="Plus plan pricing", title="Plus")

    history = [Turn(Role.USER, "how much is it?"), Turn(Role.BOT, PLUS_A)]
    context = context_for(history, topic_of)
    assert context == Context("how much is it?", "Plus plan pricing", "pricing-plus")
    assert context.text == "how much is it? Plus plan pricing"
    assert seen == [PLUS_A]


def test_an_entry_without_a_question_gives_its_title_as_the_topic() -> None:
    """A title is not a unit of the index by itself: no entry is named to take it from."""
    history = [Turn(Role.USER, "how much is it?"), Turn(Role.BOT, PLUS_A)]
    context = context_for(history, lambda text: Entry("pricing", PLUS_A, title="Pricing"))
    assert context == Context("how much is it?", "Pricing")


def test_topic_of_returning_none_falls_back_to_the_first_sentence() -> None:
    history = [Turn(Role.USER, PLUS_Q), Turn(Role.BOT, PLUS_A)]
    assert context_for(history, lambda text: None) == context_for(history)


@pytest.mark.parametrize(
    "kind", [ReplyKind.FALLBACK, ReplyKind.CLARIFY, ReplyKind.SMALLTALK, ReplyKind.HANDOFF]
)
def test_a_reply_that_is_not_an_answer_gives_no_topic(kind: ReplyKind) -> None:
    """The bot's set wording ("Sorry, I don't have a good answer for that.") names no
    subject: the question stands alone, and the reply's text is not looked up."""
    history = [Turn(Role.USER, PLUS_Q), Turn(Role.BOT, "Sorry, I can't answer that.", kind)]

    def topic_of(text: str) -> Entry | None:
        raise AssertionError("only an answer is looked up")

    assert context_for(history, topic_of) == Context(PLUS_Q)
    assert context_for(history[1:]) is None


def test_an_answer_known_as_one_gives_its_topic() -> None:
    answered = [Turn(Role.USER, PLUS_Q), Turn(Role.BOT, PLUS_A, ReplyKind.ANSWER)]
    assert context_for(answered) == context_for([Turn(Role.USER, PLUS_Q), Turn(Role.BOT, PLUS_A)])
    assert context_for(answered) == Context(
        PLUS_Q, "Plus costs $8 per user per month billed monthly."
    )


def test_the_latest_exchange_wins() -> None:
    history = [
        Turn(Role.USER, "How do I reset my password?"),
        Turn(Role.BOT, "Click Forgot password. The link works for an hour."),
        Turn(Role.USER, PLUS_Q),
        Turn(Role.BOT, PLUS_A),
    ]
    context = context_for(history)
    assert context is not None
    assert context.question == PLUS_Q
    assert "password" not in context.text


def test_a_question_after_the_last_reply_stands_alone() -> None:
    history = [
        Turn(Role.USER, "How do I reset my password?"),
        Turn(Role.BOT, "Click Forgot password."),
        Turn(Role.USER, PLUS_Q),
    ]
    assert context_for(history) == Context(PLUS_Q)


def test_agent_turns_are_skipped() -> None:
    history = [Turn(Role.USER, PLUS_Q), Turn(Role.AGENT, "Let me check that for you.")]
    assert context_for(history) == Context(PLUS_Q)


def test_a_bot_only_history_gives_the_bot_topic() -> None:
    history = [Turn(Role.BOT, "Hi! I'm Lumen Assistant. What can I help you with?")]
    assert context_for(history) == Context(None, "Hi!")


def test_a_long_first_sentence_is_cut() -> None:
    long_reply = "x" * (BOT_CONTEXT_CHARS * 2) + ". Second sentence."
    context = context_for([Turn(Role.USER, "q"), Turn(Role.BOT, long_reply)])
    assert context == Context("q", "x" * BOT_CONTEXT_CHARS)


def test_smalltalk_history_from_the_sample_queries() -> None:
    history = [
        Turn(Role.USER, "Hi, I'm on the Plus plan."),
        Turn(Role.BOT, "Thanks! What can I help you with today?"),
    ]
    context = context_for(history)
    assert context is not None and context.text == "Hi, I'm on the Plus plan. Thanks!"
