"""Personal data redaction: what is masked before any text leaves for a language model.

`redact(text)` replaces e-mail addresses, payment card numbers (only those that pass the Luhn
check), IBANs (only those that pass the ISO 13616 mod-97 check), IPv4 and IPv6 addresses and
phone numbers with a placeholder naming what was there (``[EMAIL]``, ``[CARD]``, ``[IBAN]``,
``[IP]``, ``[PHONE]``). The checks keep order numbers and versions intact: "order
4111 1111 1111 1112" fails the Luhn check, "999.1.1.1" is not an IPv4 address, and a bare run of
digits with no ``+``, brackets or separators is not taken for a phone number.

The patterns run in the order above, so a card number is never half-masked as a phone number.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CARD_PATTERN",
    "EMAIL_PATTERN",
    "IBAN_PATTERN",
    "IPV4_PATTERN",
    "IPV6_PATTERN",
    "Redaction",
    "iban_valid",
    "luhn_valid",
    "redact",
    "redact_text",
]

EMAIL_PATTERN = re.compile(
    r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
# 13-19 digits, optionally grouped by single spaces or dashes.
CARD_PATTERN = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# Two letters, two check digits, 11-30 alphanumerics, optionally grouped by spaces.
IBAN_PATTERN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_DATE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
IPV4_PATTERN = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6_PATTERN = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# An optional +country code, an optional (area code), then groups of digits: 7-15 digits in all.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,5}(?![\w])"
)


# Lengths of IBANs by country (ISO 13616 registry), for the common ones; others need only pass
# the mod-97 check.
_IBAN_LENGTHS: Final[Mapping[str, int]] = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
    "AE": 23, "SA": 24, "IL": 23, "BR": 29, "UA": 29,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Redaction:
    """A redacted text and what was masked in it.

    Attributes:
        text: the text with placeholders.
        counts: how many of each kind were masked, e.g. ``{"EMAIL": 1}``.
    """

    text: str
    counts: tuple[tuple[str, int], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.counts)


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum (payment card numbers do)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether a string (spaces allowed) is an IBAN: its length for the country where known, and
    a correct ISO 13616 mod-97 check."""
    compact = candidate.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> str | None:
    digits = re.sub(r"[ -]", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else None


def _iban(match: re.Match[str]) -> str | None:
    value = match.group()
    # The pattern may have run on into a following word ("... 7654 32 OK"): try shorter groups.
    while value:
        if iban_valid(value):
            return "[IBAN]" + match.group()[len(value) :]
        if " " not in value:
            return None
        value = value.rsplit(" ", 1)[0]
    return None


def _ipv4(match: re.Match[str]) -> str | None:
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    return "[IP]"


def _ipv6(match: re.Match[str]) -> str | None:
    value = match.group()
    if value.count(":") < 2:
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return "[IP]"


def _phone(match: re.Match[str]) -> str | None:
    value = match.group()
    if _DATE.fullmatch(value):
        return None
    digits = sum(char.isdigit() for char in value)
    # Plain digit runs without a + or separators are too often ids or amounts.
    grouped = value.startswith("+") or value.startswith("(") or re.search(r"[ .-]", value)
    return "[PHONE]" if 7 <= digits <= 15 and grouped else None


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    ("EMAIL", EMAIL_PATTERN, lambda _: "[EMAIL]"),
    ("IBAN", IBAN_PATTERN, _iban),
    ("CARD", CARD_PATTERN, _card),
    ("IP", IPV4_PATTERN, _ipv4),
    ("IP", IPV6_PATTERN, _ipv6),
    ("PHONE", _PHONE, _phone),
)


def redact(text: str) -> Redaction:
    """Mask personal data in `text` (see the module docstring for what and how)."""
    counts: dict[str, int] = {}
    for kind, pattern, replacement in _RULES:

        def substitute(
            match: re.Match[str],
            kind: str = kind,
            replacement: Callable[[re.Match[str]], str | None] = replacement,
        ) -> str:
            masked = replacement(match)
            if masked is None:
                return match.group()
            counts[kind] = counts.get(kind, 0) + 1
            return masked

        text = pattern.sub(substitute, text)
    return Redaction(text, tuple(sorted(counts.items())))


def redact_text(text: str) -> str:
    """`redact(text).text`: the masked text alone."""
    return redact(text).text
