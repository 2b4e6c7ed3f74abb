"""Text matching: configured phrases as whole words, acknowledgements, repeated questions."""

from __future__ import annotations

import pytest

from policies.matching import (
    PhraseMatcher,
    is_acknowledgement,
    is_affirmative,
    looks_like_new_question,
    normalize,
    similar_questions,
)


def test_normalize_folds_case_punctuation_and_curly_apostrophes() -> None:
    assert normalize("  I’d LIKE, to talk!! 👋 ") == "i'd like to talk"


@pytest.mark.parametrize(
    ("phrases", "text", "found"),
    [
        (["agent"], "Can I get an AGENT please", "agent"),
        (["agent"], "the reagent is missing", None),
        (["agent"], "agents?", None),
        (["talk to someone"], "I want to talk   to, someone now", "talk to someone"),
        (
            ["I'd like to talk to a person"],
            "I’d like to talk to a person",
            "I'd like to talk to a person",
        ),
        (["refund*"], "what about refunds", "refund*"),
        (["f*ck*"], "f*cking app", "f*ck*"),
        (["f*ck*"], "fucking app", "f*ck*"),
        (["shut up"], "please shut-up", "shut up"),
    ],
)
def test_phrase_matcher(phrases: list[str], text: str, found: str | None) -> None:
    # Curly and straight apostrophes read the same; the phrase is reported as configured.
    assert PhraseMatcher(phrases).find(text) == found


def test_phrase_matcher_counts_and_ignores_empty_phrases() -> None:
    matcher = PhraseMatcher(["idiot", "stupid", "", "*"])

    assert matcher.count("you stupid idiot") == 2
    assert bool(matcher)
    assert not PhraseMatcher([])


@pytest.mark.parametrize("text", ["yes", "Yes please!", "sure", "ok", "go ahead 👍", "Yep."])
def test_affirmatives(text: str) -> None:
    assert is_affirmative(text)


@pytest.mark.parametrize("text", ["yes, but how do I export?", "no", "no thanks", "maybe"])
def test_not_affirmatives(text: str) -> None:
    assert not is_affirmative(text)


@pytest.mark.parametrize("text", ["ok", "Great!", "👍", "🙏🙏", "thanks again", "got it, thanks"])
def test_acknowledgements_are_not_new_questions(text: str) -> None:
    assert is_acknowledgement(text)
    assert not looks_like_new_question(text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I export to PDF?",
        "one more thing: can I share notes",
        "my sync stopped working",
        "thanks! and what about markdown?",
        "the desktop app crashes whenever I open a large notebook",
    ],
)
def test_new_questions(text: str) -> None:
    assert looks_like_new_question(text)


@pytest.mark.parametrize("text", ["that solved it", "all sorted", "brilliant"])
def test_short_statements_are_not_new_questions(text: str) -> None:
    assert not looks_like_new_question(text)


def test_similar_questions() -> None:
    assert similar_questions("How do I reset my password?", "how do i reset my password")
    assert similar_questions("How can I reset the password?", "reset my password please")
    assert not similar_questions("How do I reset my password?", "How do I export a PDF?")
    assert not similar_questions("?!", "...")
