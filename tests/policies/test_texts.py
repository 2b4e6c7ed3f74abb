"""The wording: built-in texts per tone, configured texts, the wait, the sign-off."""

from __future__ import annotations

import pytest

from policies.config import TEXT_PLACEHOLDERS, Tone
from policies.texts import BUILT_IN
from tests.policies.builders import texts


@pytest.mark.parametrize("tone", list(Tone))
def test_every_tone_has_every_text_and_only_fallback_apologises(tone: Tone) -> None:
    assert set(BUILT_IN[tone]) == set(TEXT_PLACEHOLDERS)
    for name, text in BUILT_IN[tone].items():
        apologises = "sorry" in text.lower() or "apolog" in text.lower()
        assert apologises == (name == "fallback"), name


def test_informal_defaults_match_the_engine_constants() -> None:
    from bot.engine import CLARIFY_TEXT, FALLBACK_TEXT

    wording = texts()
    assert wording.fallback == FALLBACK_TEXT
    assert wording.clarify == CLARIFY_TEXT


def test_expected_wait_and_sign_off_go_into_the_handoff_message() -> None:
    wording = texts(
        {"handoff": {"expected_wait": "within 2 hours"}, "persona": {"sign_off": "— Lumen"}}
    )

    assert wording.handoff.startswith("I'm bringing in a person")
    assert "usually within 2 hours." in wording.handoff
    assert wording.handoff.endswith("\n\n— Lumen")
    assert wording.resolved.endswith("\n\n— Lumen")
    assert not wording.fallback.endswith("— Lumen")


def test_configured_texts_win_and_keep_runtime_placeholders() -> None:
    wording = texts(
        {
            "texts": {
                "repeat_offer": "Still about {topic}? {bot_name} can fetch a person.",
                "greeting": "Yo, {bot_name} here {{literally}}",
            }
        }
    )

    assert wording.repeat(wording.repeat_offer, "PDF export") == (
        "Still about PDF export? Lumen Assistant can fetch a person."
    )
    assert wording.greeting == "Yo, Lumen Assistant here {literally}"
