"""The conversation state derived from the history: counters the policies read."""

from __future__ import annotations

from bot.model import Owner, ReplyKind, Role
from policies.state import ConversationState, HandoffReason, Outcome, PolicyDecision
from tests.policies.builders import agent, bot, state, user

FALLBACK, CLARIFY, SMALLTALK = ReplyKind.FALLBACK, ReplyKind.CLARIFY, ReplyKind.SMALLTALK


def test_empty_history() -> None:
    empty = ConversationState.from_history(())

    assert empty.consecutive_bot_messages == 0
    assert empty.consecutive_misses == 0
    assert empty.last_reply_kind is None
    assert empty.last_bot_turn is None
    assert not empty.recent_downvote
    assert empty.owner is Owner.BOT


def test_consecutive_bot_messages_count_the_tail() -> None:
    assert state(user("q"), bot(), bot(), bot()).consecutive_bot_messages == 3
    assert state(bot(), bot(), user("q")).consecutive_bot_messages == 0
    assert state(bot(), agent("hi"), bot()).consecutive_bot_messages == 1


def test_consecutive_misses_skip_smalltalk_and_stop_at_an_answer() -> None:
    history = (
        user("a"),
        bot(kind=FALLBACK),
        user("b"),
        bot("ok", ReplyKind.ANSWER, "x"),
        user("c"),
        bot(kind=CLARIFY),
        user("hi"),
        bot(kind=SMALLTALK),
        user("d"),
        bot(kind=FALLBACK),
    )

    built = state(*history)

    assert built.consecutive_misses == 2
    assert built.previous_reply_kinds == (FALLBACK, SMALLTALK, CLARIFY, ReplyKind.ANSWER, FALLBACK)
    assert built.last_reply_kind is FALLBACK


def test_an_agent_message_ends_the_run_of_misses() -> None:
    assert state(bot(kind=FALLBACK), agent("I'm here"), bot(kind=FALLBACK)).consecutive_misses == 1


def test_answered_entries_newest_first_and_distinct() -> None:
    built = state(
        user("a"),
        bot("A", entry="reset-password"),
        user("b"),
        bot("B", entry="export-pdf"),
        user("c"),
        bot("A", entry="reset-password"),
    )

    assert built.last_answered_entry_ids == ("reset-password", "export-pdf")


def test_downvotes() -> None:
    built = state(
        user("How do I export to PDF?"),
        bot("A", entry="export-pdf", downvoted=True),
        user("hello"),
        bot("Hi!", kind=SMALLTALK),
    )

    assert built.recent_downvote
    assert built.downvoted_entry_ids == ("export-pdf",)
    assert built.downvoted_questions == ("How do I export to PDF?",)
    # A later answer without a 👎 is the latest answer now.
    later = state(*built.history, user("q"), bot("B", entry="invoices"))
    assert not later.recent_downvote
    assert later.downvoted_entry_ids == ("export-pdf",)


def test_customer_questions_and_abuse_count() -> None:
    built = state(
        user("you idiot"),
        bot(),
        user("how do I sync"),
        bot(),
        user("idiot bot"),
        abusive=("idiot",),
    )

    assert built.customer_questions == ("idiot bot", "how do I sync", "you idiot")
    assert built.abuse_count == 2
    assert [t.role for t in built.history][:2] == [Role.USER, Role.BOT]


def test_decision_constructors() -> None:
    silent = PolicyDecision.silent("resolved", resolve=True)
    handoff = PolicyDecision.handoff("A person will reply.", HandoffReason.TOPIC, "legal")

    assert silent.outcome is Outcome.SILENT and not silent.speaks and silent.resolve
    assert silent.handoff_reason is None
    assert handoff.outcome is Outcome.HANDOFF and handoff.speaks
    assert handoff.reason == "topic:legal"
    assert handoff.handoff_reason is HandoffReason.TOPIC
    assert handoff.reply is not None and handoff.reply.kind is ReplyKind.HANDOFF
