"""Turn-taking policies: the addressed gate, resolved threads, the bot-message cap."""

from __future__ import annotations

import pytest

from bot.model import Owner, ReplyKind
from policies.state import Outcome
from policies.turn_taking import AddressedGate, BotMessageCap, MarksResolved, ResolvedThread
from tests.policies.builders import bot, make, state, texts, turn, user

# Addressed gate ---------------------------------------------------------------------------------


def test_gate_silences_unaddressed_messages() -> None:
    gate = make(AddressedGate)
    assert gate.applies(turn("anyone?", addressed=False), state())
    decision = gate.decide(turn("anyone?", addressed=False), state())
    assert decision.outcome is Outcome.SILENT and decision.reason == "not_addressed"


def test_gate_silences_a_human_owned_conversation() -> None:
    gate = make(AddressedGate)
    human = state(owner=Owner.HUMAN)
    assert gate.applies(turn("hello?"), human)
    assert gate.decide(turn("hello?"), human).reason == "human_owner"


def test_gate_lets_an_addressed_message_through() -> None:
    assert not make(AddressedGate).applies(turn("How do I export?"), state())


# Resolved threads -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["thanks again!", "👍", "ok", "that solved it", "great, cheers"])
def test_resolved_thread_stays_silent_for_acknowledgements(text: str) -> None:
    policy = make(ResolvedThread)
    assert policy.applies(turn(text), state(resolved=True))
    assert policy.decide(turn(text), state(resolved=True)).outcome is Outcome.SILENT


@pytest.mark.parametrize(
    "text", ["How do I export to Markdown?", "my sync broke again", "can I talk to a human"]
)
def test_resolved_thread_answers_a_new_question(text: str) -> None:
    assert not make(ResolvedThread).applies(turn(text), state(resolved=True))


def test_open_thread_is_not_silenced() -> None:
    assert not make(ResolvedThread).applies(turn("ok"), state())


@pytest.mark.parametrize(
    "text", ["Thanks, that solved it!", "that fixed it 🎉", "✅", "All sorted, thank you", "☑️"]
)
def test_resolving_messages_mark_the_thread(text: str) -> None:
    policy = make(MarksResolved)
    assert policy.applies(turn(text), state())
    decision = policy.decide(turn(text), state())
    assert decision.resolve
    assert decision.outcome is Outcome.REPLY
    assert decision.reply is not None and decision.reply.kind is ReplyKind.SMALLTALK
    assert decision.reply.text == texts().resolved


@pytest.mark.parametrize(
    "text", ["that worked, but what about PDFs?", "it never worked", "thanks!", "solved?"]
)
def test_not_resolving(text: str) -> None:
    assert not make(MarksResolved).applies(turn(text), state())


def test_resolving_without_acknowledgement_is_silent() -> None:
    policy = make(MarksResolved, {"resolution": {"acknowledge": False}})
    decision = policy.decide(turn("that fixed it"), state())
    assert decision.outcome is Outcome.SILENT and decision.resolve


def test_configured_resolution_phrases_and_emoji() -> None:
    policy = make(MarksResolved, {"resolution": {"phrases": ["case closed"], "emoji": ["🏁"]}})
    assert policy.applies(turn("Case closed."), state())
    assert policy.applies(turn("🏁"), state())
    assert not policy.applies(turn("✅"), state())


def test_already_resolved_thread_is_not_resolved_again() -> None:
    assert not make(MarksResolved).applies(turn("that fixed it"), state(resolved=True))


# Bot message cap --------------------------------------------------------------------------------


def test_cap_silences_after_max_consecutive_bot_messages() -> None:
    policy = make(BotMessageCap, {"turn_taking": {"max_consecutive_bot_messages": 2}})
    assert not policy.applies(turn("q"), state(user("q"), bot()))
    capped = state(user("q"), bot(), bot())
    assert policy.applies(turn("q"), capped)
    assert policy.decide(turn("q"), capped).reason == "bot_message_cap"
