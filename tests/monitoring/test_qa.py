"""The QA pass: each guideline, the YAML loader's errors, and flags landing in the review queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.model import ConversationKey, Reply, Role
from bot.storage.store import Store
from monitoring.qa import Guidelines, check_reply, load_guidelines, run_qa
from monitoring.review import ReviewQueue

KB_URLS = ("https://help.lumen-notes.example/articles/reset-password",)


def rules_of(text: str, guidelines: Guidelines | None = None) -> list[str]:
    return [v.rule for v in check_reply(text, guidelines or load_guidelines(), KB_URLS)]


def test_the_bundled_guidelines_load() -> None:
    guidelines = load_guidelines()
    assert guidelines.max_chars == 1200
    assert "calm down" in guidelines.forbidden_phrases


def test_a_polite_reply_with_a_kb_link_passes() -> None:
    text = (
        "On the sign-in page click **Forgot password?** and we'll send a link; details at "
        "https://help.lumen-notes.example/articles/reset-password/#steps. Works for SSO and PDF."
    )
    assert rules_of(text) == []


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("x" * 1300, "length"),
        ("You MUST NEVER share your password.", "caps"),
        ("Great!!! Done!", "exclamations"),
        ("This is terrible, awful and horrible. I hate this broken mess.", "negative_tone"),
        ("Please calm down, I'm trying to help.", "forbidden_phrase"),
        ("See https://evil.example.com/phish for details.", "link"),
        ("Read https://help.lumen-notes.example/articles/unknown-page", "link"),
    ],
)
def test_each_rule_flags_its_breach(text: str, rule: str) -> None:
    assert rule in rules_of(text)


def test_forbidden_phrases_match_whole_words_only() -> None:
    guidelines = Guidelines(forbidden_phrases=("per my last",))
    assert rules_of("As per my last message, open Settings.", guidelines) == ["forbidden_phrase"]
    assert rules_of("As per my lasting advice, open Settings.", guidelines) == []


def test_allowed_prefixes_and_disabled_link_check(tmp_path: Path) -> None:
    file = tmp_path / "qa.yaml"
    file.write_text("links:\n  allowed_prefixes: ['https://status.example.com/']\n")
    assert rules_of("See https://status.example.com/incidents/42.", load_guidelines(file)) == []
    file.write_text("links:\n  check: false\n")
    assert rules_of("See https://elsewhere.example.org.", load_guidelines(file)) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("max_chars: -3\n", "max_chars"),
        ("tone:\n  shouting: 2\n", "tone.shouting"),
        ("- a\n- b\n", "YAML mapping"),
        ("max_chars: [\n", "cannot read"),
    ],
)
def test_invalid_guidelines_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "qa.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_guidelines(file)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SUPPORTBOT_QA_GUIDELINES"):
        load_guidelines(tmp_path / "nope.yaml")


def test_run_qa_flags_breaches_into_the_review_queue(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        conversation = store.get_or_create_conversation(ConversationKey("web", "", "c1"), "ann")
        texts = [
            "Happy to help: open Settings > Account.",
            "WARNING!!! Visit https://evil.example.com now!",
            "Sure, see https://help.lumen-notes.example/articles/reset-password",
        ]
        ids = []
        for text in texts:
            message = store.add_message(conversation.id, Role.USER, "ann", "help")
            ids.append(store.add_reply(conversation.id, message, Reply.smalltalk(text)))
        queue = ReviewQueue(store.engine, sample_rate=0.0)
        progress: list[tuple[int, int]] = []
        report = run_qa(
            store.engine,
            load_guidelines(),
            KB_URLS,
            queue,
            on_progress=lambda done, total: progress.append((done, total)),
        )
        assert (report.checked, report.flagged) == (3, 1)
        assert {"caps", "exclamations", "link"} <= report.by_rule.keys()
        assert progress[-1] == (3, 3)
        (entry,) = queue.entries(only_flagged=True)
        assert entry.reply_id == ids[1]
        assert {"caps", "exclamations", "link"} <= {v["rule"] for v in entry.violations}
        # Idempotent: a second pass changes nothing.
        run_qa(store.engine, load_guidelines(), KB_URLS, queue)
        assert queue.count() == 1
    finally:
        store.close()
