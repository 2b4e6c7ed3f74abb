"""Cleaning: noise out, PII redacted with stable placeholders, near-duplicates removed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from training.clean import clean, deduplicate, is_noise, normalize_markup
from training.importers import ImportResult, People
from training.model import Conversation, Signals, Speaker, Turn
from training.redact import ConversationRedactor, iban_valid, luhn_valid

# The planted corpus ------------------------------------------------------------------------------


def test_no_planted_pii_survives_cleaning(imported: ImportResult, planted: dict[str, Any]) -> None:
    conversations, report = clean(imported)
    output = "\n".join(c.to_jsonl() for c in conversations)
    # JSON escapes nothing in these values, but compare without case too: "MARIA" is Maria.
    survivors = [v for v in planted["must_not_survive"] if v.lower() in output.lower()]
    assert survivors == []
    # ... while what only looks like PII (a Luhn-failing order number, versions) stays.
    assert [v for v in planted["must_survive"] if v not in output] == []
    by_kind = report.redaction.to_json()["by_kind"]
    assert isinstance(by_kind, dict)
    for kind in ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET", "NAME"):
        assert by_kind[kind] >= 1, kind
    assert by_kind["CARD"] == 2 and by_kind["IBAN"] == 2 and by_kind["IP"] == 3


def test_every_written_field_is_redacted_not_only_text(imported: ImportResult) -> None:
    conversations, _ = clean(imported)
    authors = {t.author for c in conversations for t in c.turns if t.role is not Speaker.BOT}
    assert all(a.startswith("<NAME_") for a in authors), authors


def test_report_counts_conversations_and_drops(imported: ImportResult) -> None:
    conversations, report = clean(imported)
    data = report.to_json()
    assert data["kept"] == len(conversations)
    assert data["dropped_turns"]["import:slack:channel_join"] == 1
    assert data["dropped_turns"]["emoji"] >= 2  # ":+1:", "🙏🙏", "👍👍"
    assert data["dropped_turns"]["plus_one"] == 1
    # The lone "+1" and "👍👍" messages left conversations with no customer question.
    assert data["dropped_conversations"]["no_customer"] >= 2
    json.dumps(data)  # serializable as is


# Placeholders ------------------------------------------------------------------------------------


def test_placeholders_are_stable_within_a_conversation_and_restart_in_the_next() -> None:
    people = People.build([("U1", ["maria.lopez", "Maria Lopez"])])
    first = ConversationRedactor(people)
    a = first.redact("mail maria@example.com or bob@example.com, then MARIA@example.com")
    assert a == "mail <EMAIL_1> or <EMAIL_2>, then <EMAIL_1>"
    assert (
        first.redact("<@U1> here, Maria Lopez; ask maria")
        == "<NAME_1> here, <NAME_1>; ask <NAME_1>"
    )
    assert first.person("U1", count=False) == "<NAME_1>"
    second = ConversationRedactor(people)
    assert second.redact("bob@example.com") == "<EMAIL_1>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111-1111-1111-1111 ok", "card <CARD_1> ok"),
        ("order 4111 1111 1111 1112 ok", "order 4111 1111 1111 1112 ok"),  # fails Luhn: kept
        ("tracking 1234567890123", "tracking 1234567890123"),
        ("GB82 WEST 1234 5698 7654 32 Thanks", "<IBAN_1> Thanks"),
        ("GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"),  # bad checksum
        ("from 10.0.0.254 and fe80::1ff:fe23:4567:890a", "from <IP_1> and <IP_2>"),
        ("version 1.2.3.4000 at 10:30:00", "version 1.2.3.4000 at 10:30:00"),
        ("call +49 30 901820 now", "call <PHONE_1> now"),
        (
            "https://u:p4ss@example.com/x?sig=abc&page=2",
            "https://<SECRET_1>@example.com/x?sig=<SECRET_2>&page=2",
        ),
        ("see https://example.com/docs?page=2.", "see https://example.com/docs?page=2."),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abcdefgh", "Authorization: Bearer <SECRET_1>"),
    ],
)
def test_kinds(text: str, expected: str) -> None:
    assert ConversationRedactor().redact(text) == expected


def test_checksums() -> None:
    assert luhn_valid("4242424242424242") and not luhn_valid("4242424242424241")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid(
        "DE89 3704 0044 0532 0130 01"
    )
    assert not iban_valid("DE89 3704 0044 0532 0130")  # a German IBAN has 22 characters


def test_display_name_descriptors_are_not_names() -> None:
    people = People.build([("1", ["Lena (Lumen team)", "Sam from Support"])])
    redactor = ConversationRedactor(people)
    assert redactor.redact("Lena from Lumen support, see lumen-notes.com") == (
        "<NAME_1> from Lumen support, see lumen-notes.com"
    )


# Noise and markup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "role", "reason"),
    [
        ("", Speaker.CUSTOMER, "empty"),
        ("  ", Speaker.AGENT, "empty"),
        (":+1: :tada:", Speaker.CUSTOMER, "emoji"),
        ("🙏🙏", Speaker.CUSTOMER, "emoji"),
        ("+1", Speaker.CUSTOMER, "plus_one"),
        ("Bump!", Speaker.CUSTOMER, "plus_one"),
        ("Lumen Bot has joined the channel", Speaker.BOT, "status"),
        ("How do I join the channel for beta testers?", Speaker.CUSTOMER, None),
        ("thanks 🙏", Speaker.CUSTOMER, None),
    ],
)
def test_noise(text: str, role: Speaker, reason: str | None) -> None:
    assert is_noise(Turn(role, "x", text)) == reason


def test_slack_markup_is_unwrapped() -> None:
    assert normalize_markup("mail <mailto:a@b.co|a@b.co> in <#C1|general> <!here>") == (
        "mail a@b.co in #general @here"
    )
    assert normalize_markup("<https://x.io/a|the guide> &amp; more") == (
        "the guide (https://x.io/a) & more"
    )


# Near-duplicates ---------------------------------------------------------------------------------


def _conversation(cid: str, question: str, answer: str) -> Conversation:
    return Conversation(
        cid, "test", "web", (Turn.customer("c", question), Turn.agent("a", answer)), Signals()
    )


def test_near_duplicates_are_removed_keeping_the_first() -> None:
    answer = "Open Settings, choose Sync, and press Sync now to send every change to the server."
    original = _conversation("a", "My notes do not sync between my laptop and my phone", answer)
    copy = _conversation("b", "My notes do not sync between my laptop and my phone!", answer)
    different = _conversation(
        "c", "How can I print a notebook?", "Choose File, then Print, and pick the pages."
    )
    kept = deduplicate([original, copy, different])
    assert [c.id for c in kept] == ["a", "c"]


def test_paraphrases_are_not_duplicates() -> None:
    one = _conversation("a", "How do I cancel my subscription?", "Account > Subscription > Cancel.")
    two = _conversation(
        "b", "I want to stop paying for Premium", "Account > Subscription > Cancel."
    )
    assert len(deduplicate([one, two])) == 2
