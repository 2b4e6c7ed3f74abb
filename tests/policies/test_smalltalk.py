"""Tests for policies.smalltalk: greetings, thanks and goodbyes, and nothing else."""

from __future__ import annotations

import pytest

from policies.smalltalk import SmalltalkConfig, smalltalk_reply

CONFIG = SmalltalkConfig()


@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "Hi!",
        "HELLO",
        "hey there",
        "  hello   team  ",
        "Good morning",
        "good Evening everyone.",
        "hiya :)",
        "Greetings!!!",
    ],
)
def test_greetings(text: str) -> None:
    assert smalltalk_reply(text) == "Hi! I'm Lumen Assistant. What can I help you with?"


@pytest.mark.parametrize(
    "text",
    [
        "thanks",
        "Thanks!",
        "THANK YOU",
        "thank you so much!!",
        "thx",
        "Cheers.",
        "great, thanks",
        "Perfect thanks!",
        "ok, thanks bot",
        "many thanks",
        "thanks a lot :)",
        "Thanks again!",
    ],
)
def test_thanks(text: str) -> None:
    assert smalltalk_reply(text) == CONFIG.thanks


@pytest.mark.parametrize(
    "text", ["bye", "Goodbye!", "SEE YOU", "see ya.", "cya", "Have a nice day!", "have a great one"]
)
def test_goodbyes(text: str) -> None:
    assert smalltalk_reply(text) == CONFIG.goodbye


@pytest.mark.parametrize(
    "text",
    [
        "hi, how do I reset my password?",
        "Hello, I can't log in",
        "thanks, but how do I export to PDF?",
        "hey can you help me with billing",
        "bye bye subscription: how do I cancel?",
        "good",
        "highlight text in a note",
        "this app is great, thanks to the sync",
        "",
        "   ",
        "How do I delete my account?",
    ],
)
def test_real_questions_are_not_smalltalk(text: str) -> None:
    assert smalltalk_reply(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "Hi, team!",
        "Hey there, bot!",
        "Thanks, team.",
        "Thank you, bot",
        "Hi 👋",
        "hello?",
        "Bye bot",
        "ok, thanks!",
        "Thanks, Lumen Assistant!",
    ],
)
def test_an_addressee_after_a_comma_is_still_smalltalk(text: str) -> None:
    assert smalltalk_reply(text) is not None


def test_long_text_is_never_smalltalk() -> None:
    assert smalltalk_reply("thanks " + "!" * 80) is None


def test_replies_come_from_the_config() -> None:
    config = SmalltalkConfig(
        bot_name="Ada", greeting="Hello from {bot_name}", thanks="np", goodbye="ciao {bot_name}"
    )
    assert smalltalk_reply("hi", config) == "Hello from Ada"
    assert smalltalk_reply("thanks", config) == "np"
    assert smalltalk_reply("bye", config) == "ciao Ada"


# The policy: the channel's persona -------------------------------------------------------------


def _policy(overrides: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    from policies.smalltalk import SmalltalkPolicy
    from tests.policies.builders import settings, texts

    return SmalltalkPolicy(settings(overrides), texts(overrides))


def test_policy_answers_in_the_informal_default() -> None:
    from policies.state import Outcome
    from tests.policies.builders import state, turn

    policy = _policy()
    assert policy.applies(turn("hello"), state())
    decision = policy.decide(turn("hello"), state())
    assert decision is not None and decision.outcome is Outcome.REPLY
    assert decision.reply is not None
    assert decision.reply.text == "Hi! I'm Lumen Assistant. What can I help you with?"
    assert not policy.applies(turn("how do I export?"), state())


def test_policy_uses_tone_name_texts_and_sign_off() -> None:
    from tests.policies.builders import state, turn

    policy = _policy(
        {
            "persona": {"bot_name": "Nova", "tone": "formal", "sign_off": "The Lumen team"},
            "texts": {"thanks": "My pleasure, from {bot_name}."},
        }
    )

    greeting = policy.decide(turn("good morning Nova"), state())
    thanks = policy.decide(turn("thank you"), state())
    goodbye = policy.decide(turn("bye"), state())

    assert greeting is not None and greeting.reply is not None
    assert greeting.reply.text == "Hello, I am Nova. How may I help you?"
    assert thanks is not None and thanks.reply is not None
    assert thanks.reply.text == "My pleasure, from Nova."
    assert goodbye is not None and goodbye.reply is not None
    assert goodbye.reply.text == "Thank you for contacting us. Goodbye.\n\nThe Lumen team"
