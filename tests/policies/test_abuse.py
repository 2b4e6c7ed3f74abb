"""The abuse policy: a calm reply, then a person at the threshold."""

from __future__ import annotations

import pytest

from bot.model import ActionKind, ReplyKind
from policies.abuse import AbusePolicy
from policies.state import HandoffReason, Outcome
from tests.policies.builders import settings, state, texts, turn, user


def policy(threshold: int = 2) -> AbusePolicy:
    overrides = {"abuse": {"threshold": threshold}}
    return AbusePolicy(settings(overrides), texts(overrides))


@pytest.mark.parametrize(
    "text", ["you stupid bot", "What the FUCK is this", "shut up", "f*cking sync", "idiots"]
)
def test_abusive_messages(text: str) -> None:
    assert policy().applies(turn(text), state())


@pytest.mark.parametrize("text", ["How do I export?", "this is frustrating", "Scunthorpe office"])
def test_ordinary_messages(text: str) -> None:
    assert not policy().applies(turn(text), state())


def test_first_abusive_message_gets_a_calm_reply_with_a_person_offered() -> None:
    decision = policy().decide(turn("you stupid bot"), state())

    assert decision.outcome is Outcome.REPLY
    assert decision.reply is not None
    assert decision.reply.kind is ReplyKind.SMALLTALK
    assert decision.reply.text == texts().abuse
    assert "sorry" not in decision.reply.text.lower()
    assert [a.kind for a in decision.reply.actions] == [ActionKind.HANDOFF]


def test_abusive_message_at_the_threshold_is_handed_over() -> None:
    earlier = state(user("you idiot"), abusive=("idiot",))

    decision = policy(threshold=2).decide(turn("stupid bot"), earlier)

    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.ABUSE
    assert decision.reason == "abuse:2"
    assert decision.reply is not None and decision.reply.text == texts().handoff


def test_threshold_one_hands_over_at_once() -> None:
    assert policy(threshold=1).decide(turn("idiot"), state()).outcome is Outcome.HANDOFF


def test_is_abusive_counts_with_the_channel_words() -> None:
    custom = AbusePolicy(settings({"abuse": {"words": ["darn"]}}), texts())
    assert custom.is_abusive("Darn it")
    assert not custom.is_abusive("stupid")
