"""Rendering replies and handoff cards as Discord messages (pure functions)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.payloads import EmbedPayload
from adapters.discord.render import (
    DOWN_ID,
    HANDOFF_ID,
    MESSAGE_LIMIT,
    UP_ID,
    HandoffCard,
    buttons_for,
    choose_id,
    conversation_from_footer,
    format_sources,
    handoff_embed,
    masked_link,
    persistent_buttons,
    render_reply,
    split_message,
    thread_name,
)
from bot.model import ConversationKey, Reply, Role, Source, Turn


def words_of(chunks: list[str]) -> list[str]:
    """The words of the text, leaving out code fences (which splitting may add)."""
    return [w for c in chunks for w in c.split() if not w.startswith("```")]


def test_short_text_is_one_message() -> None:
    assert split_message("  Hello **there**  ") == ["Hello **there**"]
    assert split_message("   ") == []


def test_long_prose_is_split_between_words() -> None:
    text = " ".join(f"word{i}" for i in range(1000))  # one 7,889-character line
    chunks = split_message(text)
    assert len(chunks) == 4
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert words_of(chunks) == text.split()


def test_paragraphs_break_at_line_ends() -> None:
    paragraph = "A sentence that goes on for a while. " * 10
    text = "\n\n".join(paragraph.strip() for _ in range(12))
    chunks = split_message(text)
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert all(c.endswith("a while.") for c in chunks)


def test_a_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print('line {i:03}')" for i in range(300))  # 5,999 characters
    text = f"Run this:\n\n```python\n{code}\n```\nDone."
    chunks = split_message(text)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert len(chunk) <= MESSAGE_LIMIT
        assert chunk.count("```") % 2 == 0, chunk[-40:]
    assert chunks[0].startswith("Run this:") and chunks[0].endswith("\n```")
    assert all(c.startswith("```python\n") for c in chunks[1:])
    assert chunks[-1].endswith("```\nDone.")
    lines = [line for c in chunks for line in c.split("\n") if line.startswith("print(")]
    assert lines == code.split("\n")  # no code line cut or lost


def test_a_word_longer_than_a_message_is_the_only_thing_cut() -> None:
    url = "https://example.com/" + "x" * 4500
    chunks = split_message(f"See {url} now")
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert "".join(chunks).replace(" ", "") == f"See{url}now"


def test_limit_too_small_for_fences_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("x" * 100, limit=10)


texts = st.lists(
    st.one_of(
        st.text(alphabet="abcdefghij ", min_size=0, max_size=120),
        st.sampled_from(["```", "```python", "", "# Heading", "- item one"]),
        st.lists(st.text(alphabet="xyz", min_size=1, max_size=25), max_size=40).map(" ".join),
    ),
    max_size=80,
).map("\n".join)


@settings(max_examples=200, deadline=None)
@given(text=texts, limit=st.integers(min_value=60, max_value=400))
def test_split_keeps_every_word_fits_and_balances_fences(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    assert words_of(chunks) == [w for w in text.split() if not w.startswith("```")]


def test_answer_gets_sources_as_masked_links_and_buttons_on_the_last_chunk() -> None:
    long_text = "Some detail here. " * 200
    sources = (
        Source("a", 0.9, "Reset your password", "https://help.example/reset"),
        Source("b", 0.5, "Billing [FAQ]", "https://help.example/billing (old)"),
        Source("c", 0.4, "No link"),
    )
    chunks = render_reply(Reply.answer(long_text, sources, 0.9))
    assert len(chunks) == 2
    assert chunks[0].buttons == ()
    assert [b.custom_id for b in chunks[-1].buttons] == [UP_ID, DOWN_ID, HANDOFF_ID]
    last = chunks[-1].content
    assert last.endswith(
        "-# Sources: [Reset your password](<https://help.example/reset>) · "
        r"[Billing \[FAQ\]](<https://help.example/billing%20(old%29>) · *No link*"
    )


def test_masked_link_keeps_the_link_intact() -> None:
    assert masked_link("A_b", "https://x.example/a b)") == r"[A\_b](<https://x.example/a%20b%29>)"
    assert format_sources([]) == ""
    assert format_sources([Source("x", 1.0, "T", "javascript:alert(1)")]) == "-# Source: *T*"


def test_fallback_offers_a_person_and_clarify_offers_choices() -> None:
    assert [b.custom_id for b in buttons_for(Reply.fallback("Sorry"))] == [HANDOFF_ID]
    options = tuple(Source(f"s{i}", 0.5, f"Option {i}") for i in range(3))
    clarify = render_reply(Reply.clarify("Which one?", options))
    assert [b.custom_id for b in clarify[-1].buttons] == [choose_id(i) for i in range(3)]
    assert [b.label for b in clarify[-1].buttons] == ["Option 0", "Option 1", "Option 2"]
    assert "Sources" not in clarify[-1].content
    assert render_reply(Reply.smalltalk("Hi!"))[0].buttons == ()


def test_persistent_buttons_cover_every_button_ever_sent() -> None:
    ids = {b.custom_id for b in persistent_buttons()}
    assert {UP_ID, DOWN_ID, HANDOFF_ID, choose_id(0), choose_id(4)} <= ids
    assert all(len(i) <= 100 for i in ids)


def test_thread_name_fits_discord() -> None:
    assert thread_name("  How do\nI   export? ") == "How do I export?"
    assert thread_name("") == "Support question"
    long = thread_name("word " * 60)
    assert len(long) <= 100 and long.endswith("…") and "wor…" not in long


def _size(embed: EmbedPayload) -> int:
    fields = embed.get("fields", [])
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + len(embed.get("footer", {"text": ""})["text"])
        + sum(len(f["name"]) + len(f["value"]) for f in fields)
    )


def test_handoff_embed_carries_everything_within_discord_limits() -> None:
    key = ConversationKey("discord", "1", "2", "3")
    card = HandoffCard(
        conversation=key,
        customer="ada",
        platform="discord",
        question="My sync is broken " * 300,
        attempts=("Try signing out and in again.",) * 5,
        sources=(Source("sync", 0.7, "Fix sync", "https://help.example/sync"),),
        transcript=tuple(Turn(Role.USER if i % 2 else Role.BOT, "x " * 400) for i in range(40)),
        link="https://discord.com/channels/1/2/3",
    )
    embed = handoff_embed(card)
    names = [f["name"] for f in embed["fields"]]
    assert names == ["Customer", "Platform", "What the bot tried", "Sources", "Transcript"]
    assert len(embed["description"]) <= 4096
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert _size(embed) <= 6000
    assert embed["url"] == card.link
    assert conversation_from_footer(embed["footer"]["text"]) == key
    assert conversation_from_footer("something else") is None
    assert re.search(r"\*\*Customer:\*\*", embed["fields"][-1]["value"])
