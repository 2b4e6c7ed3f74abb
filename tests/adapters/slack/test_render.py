"""Replies → Block Kit and mrkdwn (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.render import (
    METADATA_EVENT_TYPE,
    SECTION_LIMIT,
    HandoffCard,
    escape,
    handoff_card,
    reply_message,
    split_text,
    to_mrkdwn,
)
from bot.model import Reply, Source


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        ("[the guide](https://x.example/a?b=1&c=2)", "<https://x.example/a?b=1&amp;c=2|the guide>"),
        ("<https://x.example>", "<https://x.example>"),
        ("[click](javascript:alert(1))", "click (javascript:alert(1))"),
        ("[a|b](https://x.example)", "<https://x.example|a¦b>"),
        ("1 < 2 & 3 > 2", "1 &lt; 2 &amp; 3 &gt; 2"),
        ("<!channel> <@U123> hi", "&lt;!channel&gt; &lt;@U123&gt; hi"),
        ("use `a<b` **now**", "use `a&lt;b` *now*"),
        ("```\nif a < b:\n    **x**\n```", "```if a &lt; b:\n    **x**```"),
        ("# Title\n## **Sub**", "*Title*\n*Sub*"),
        ("- one\n* two\n  + three", "• one\n• two\n  • three"),
        ("> quoted & kept", "> quoted &amp; kept"),
        ("Settings > Billing", "Settings &gt; Billing"),
        ("2 * 3 * 4", "2 * 3 * 4"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_escape() -> None:
    assert escape("<a & b>") == "&lt;a &amp; b&gt;"


def _buttons(message: Any) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def test_an_answer_has_text_sources_buttons_and_metadata() -> None:
    reply = Reply.answer(
        "Open **Settings > Billing**.",
        (Source("billing", 0.9, "Billing & plans", "https://help.example/billing"),),
    )
    reply = Reply(reply.text, reply.kind, reply.sources, reply.actions, id="r1")
    message = reply_message(reply)
    assert message.text == "Open *Settings &gt; Billing*."
    assert [b["type"] for b in message.blocks] == ["section", "context", "actions"]
    assert message.blocks[1]["elements"][0]["text"] == (  # type: ignore[typeddict-item]
        "Sources: <https://help.example/billing|Billing &amp; plans>"
    )
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in _buttons(message)] == [
        ("feedback_up", "r1", "👍"),
        ("feedback_down", "r1", "👎"),
        ("handoff", "r1", "Talk to a person"),
    ]
    assert message.metadata == {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {"reply_id": "r1"},
    }


def test_a_clarify_reply_offers_one_button_per_option() -> None:
    options = (
        Source("export-pdf", 0.5, "Export a note to PDF"),
        Source("print", 0.4, "x" * 100),
    )
    reply = Reply.clarify("Which one?", options)
    reply = Reply(reply.text, reply.kind, reply.sources, reply.actions, id="r2")
    buttons = _buttons(reply_message(reply))
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("choose_0", "export-pdf"),
        ("choose_1", "print"),
    ]
    assert len(buttons[1]["text"]["text"]) == 75
    assert not any(b["type"] == "context" for b in reply_message(reply).blocks)


def test_a_fallback_offers_a_person() -> None:
    reply = Reply.fallback("Sorry")
    reply = Reply(reply.text, reply.kind, reply.sources, reply.actions, id="r3")
    assert [b["action_id"] for b in _buttons(reply_message(reply))] == ["handoff"]


def test_a_reply_without_an_id_has_nothing_to_rate() -> None:
    message = reply_message(Reply.answer("Hi", ()))
    assert _buttons(message) == []
    assert message.metadata is None


def test_long_answers_are_split_into_sections_within_slacks_limit() -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))
    message = reply_message(Reply.smalltalk(text))
    sections = [b for b in message.blocks if b["type"] == "section"]
    assert len(sections) > 1
    assert all(len(b["text"]["text"]) <= SECTION_LIMIT for b in sections)
    assert len(message.text) <= 4000


def test_split_text_never_exceeds_the_limit() -> None:
    assert split_text("a" * 7000, 3000) == ["a" * 3000, "a" * 3000, "a" * 1000]
    assert split_text("one two three", 8) == ["one two", "three"]


def test_a_handoff_card_escapes_what_people_wrote() -> None:
    card = handoff_card(HandoffCard(customer="web-visitor <b>", platform="web", question="a<b"))
    text = "\n".join(str(block) for block in card.blocks)
    assert "web-visitor &lt;b&gt;" in text and "a&lt;b" in text
    assert card.blocks[0]["type"] == "header"
