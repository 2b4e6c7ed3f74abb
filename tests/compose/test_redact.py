"""Personal data masking before text leaves for a model."""

from __future__ import annotations

import pytest

from bot.redact import iban_valid, luhn_valid, redact, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+lumen@example.co.uk please", "write to [EMAIL] please"),
        ("card 4111 1111 1111 1111 expired", "card [CARD] expired"),
        ("card 5555-5555-5555-4444", "card [CARD]"),
        ("IBAN GB82 WEST 1234 5698 7654 32 OK", "IBAN [IBAN] OK"),
        ("DE89370400440532013000", "[IBAN]"),
        ("from 192.168.1.20, or 2001:db8::1", "from [IP], or [IP]"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]"),
    ],
)
def test_personal_data_is_masked(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 (fails the Luhn check)",
        "version 1.2.3.4000 and 999.1.1.1",
        "Plus costs $8 per month, 60 minutes, 14-day trial, 2 GB, on 2024-05-01 at 10:30:00",
        "ticket 12345678",
        "Settings > Billing > Invoices",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_counts_what_it_masked() -> None:
    result = redact("a@b.io and c@d.io, card 4111111111111111")
    assert result.changed
    assert dict(result.counts) == {"EMAIL": 2, "CARD": 1}
    assert not redact("nothing here").changed


def test_an_iban_with_a_wrong_check_is_not_called_an_iban() -> None:
    # Its digit groups still look like a phone number: masking too much is the safe side.
    assert "[IBAN]" not in redact_text("GB00 WEST 1234 5698 7654 32")


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234")
