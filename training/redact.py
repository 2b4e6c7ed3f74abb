"""PII redaction with stable placeholders per conversation.

Within one conversation the same value always gets the same placeholder (`<EMAIL_1>` each time
alice@example.com appears, `<EMAIL_2>` for the next address), so a training example still reads
as a conversation ("I wrote to <EMAIL_1> ... yes, <EMAIL_1> is on file"). Placeholders start over
in every conversation: nothing links two conversations.

What is masked, in this order (earlier kinds protect their text from later patterns):

- SECRET: in URLs, `user:password@` and the values of query keys like token, key, secret,
  sig, code, or any long mixed letter-digit value; `Bearer <token>`.
- EMAIL: the address pattern (Slack's `<mailto:...>` is unwrapped by cleaning first).
- IBAN: country code, check digits, 11-30 characters, the country's length and the ISO 13616
  mod-97 check.
- CARD: 13-19 digits, optionally grouped, that pass the Luhn check (random digit runs stay).
- IP: IPv4 and IPv6 addresses that `ipaddress` accepts.
- PHONE: the `phonenumbers` matcher (valid numbers for the region, or international with +).
- NAME: mentions (`<@U123>`, `<@!123>`, `<@U123|name>`) and names from the platform's user
  directory (full names and their capitalized parts, with or without a leading @).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import phonenumbers

from bot.redact import (
    CARD_PATTERN as _CARD,
)
from bot.redact import (
    EMAIL_PATTERN as _EMAIL,
)
from bot.redact import (
    IBAN_PATTERN,
    iban_valid,
    luhn_valid,
)
from bot.redact import (
    IPV4_PATTERN as _IPV4,
)
from bot.redact import (
    IPV6_PATTERN as _IPV6,
)
from training.importers.base import People

__all__ = [
    "KINDS",
    "ConversationRedactor",
    "RedactionReport",
    "iban_valid",
    "luhn_valid",
]

KINDS: Final = ("SECRET", "EMAIL", "IBAN", "CARD", "IP", "PHONE", "NAME")

_URL = re.compile(r"\b(?:https?|ftp|wss?)://[^\s<>\"'|]+", re.IGNORECASE)
_SECRET_KEYS = re.compile(
    r"(?:^|[_-])(?:token|key|apikey|api_key|secret|password|passwd|pwd|pass|auth|"
    r"signature|sig|code|session|sid|credential|jwt|bearer)(?:$|[_-])",
    re.IGNORECASE,
)
_TOKENISH = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-.~+/=%]{16,}$")
_BEARER = re.compile(r"\b(Bearer|token)\s+([A-Za-z0-9_\-.=]{20,})", re.IGNORECASE)
_IBAN = re.compile(IBAN_PATTERN.pattern, re.IGNORECASE)
_MENTION = re.compile(r"<@!?([A-Z0-9]+|\d+)(?:\|[^>]*)?>")
_PLACEHOLDER = re.compile(r"<(?:" + "|".join(KINDS) + r")_\d+>")


@dataclass
class RedactionReport:
    """What redaction masked, by kind, over a whole run."""

    counts: Counter[str] = field(default_factory=Counter)
    conversations: int = 0
    conversations_changed: int = 0

    def add(self, other: Mapping[str, int], changed: bool) -> None:
        self.counts.update(other)
        self.conversations += 1
        self.conversations_changed += int(changed)

    def to_json(self) -> dict[str, object]:
        return {
            "by_kind": {kind: int(self.counts.get(kind, 0)) for kind in KINDS},
            "total": int(sum(self.counts.values())),
            "conversations": self.conversations,
            "conversations_changed": self.conversations_changed,
        }


class ConversationRedactor:
    """Masks PII in the turns of ONE conversation, numbering placeholders as it goes.

    Make a new one per conversation: placeholders are stable within it and start over in the
    next.

    Args:
        people: the platform's user directory (ids → names); their names and mentions are masked.
        region: the phone-number region assumed for numbers without a +country code.
    """

    def __init__(self, people: People | None = None, *, region: str = "US") -> None:
        self.region = region
        self.counts: Counter[str] = Counter()
        self._placeholders: dict[tuple[str, str], str] = {}
        self._next: Counter[str] = Counter()
        self._person_of: dict[str, str] = {}
        people = people or People()
        for user_id, names in people.names.items():
            self._person_of[user_id.lower()] = user_id
            for name in names:
                for variant in _name_variants(name):
                    self._person_of.setdefault(variant.lower(), user_id)
        names_found = sorted(
            (n for n in self._person_of if len(n) >= 3 and not n.isdigit()), key=len, reverse=True
        )
        self._names = (
            re.compile(
                r"(?<![\w<./@-])@?(?:"
                + "|".join(re.escape(n) for n in names_found)
                + r")(?![\w>@]|[-.]\w)",
                re.IGNORECASE,
            )
            if names_found
            else None
        )

    def placeholder(self, kind: str, value: str, *, count: bool = True) -> str:
        """The placeholder for `value`: the same one each time within this conversation."""
        key = (kind, value)
        if key not in self._placeholders:
            self._next[kind] += 1
            self._placeholders[key] = f"<{kind}_{self._next[kind]}>"
        if count:
            self.counts[kind] += 1
        return self._placeholders[key]

    def person(self, author: str, *, count: bool = True) -> str:
        """The placeholder that stands for a person (the same for their id, mention and name).

        `count=False` for an author field, which is always replaced and is not a finding.
        """
        user_id = self._person_of.get(author.lower(), author)
        return self.placeholder("NAME", user_id.lower(), count=count)

    def redact(self, text: str) -> str:
        """`text` with every PII value replaced by its placeholder."""
        text = self._urls(text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {self.placeholder('SECRET', m.group(2))}", text)
        text = _EMAIL.sub(lambda m: self.placeholder("EMAIL", m.group(0).lower()), text)
        text = _IBAN.sub(self._iban, text)
        text = _CARD.sub(self._card, text)
        text = _IPV4.sub(self._ip, text)
        text = _IPV6.sub(self._ip, text)
        text = self._phones(text)
        text = _MENTION.sub(lambda m: self.person(m.group(1)), text)
        if self._names is not None:
            text = self._names.sub(lambda m: self.person(m.group(0).lstrip("@")), text)
        return text

    # -- the kinds ---------------------------------------------------------------------------

    def _urls(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            url = match.group(0)
            trail = ""
            while url and url[-1] in ".,;:!?)]}":
                trail = url[-1] + trail
                url = url[:-1]
            try:
                parts = urlsplit(url)
            except ValueError:
                return match.group(0)
            netloc = parts.netloc
            if "@" in netloc:
                userinfo, host = netloc.rsplit("@", 1)
                netloc = f"{self.placeholder('SECRET', userinfo)}@{host}"
            query = parts.query
            if query:
                pairs = parse_qsl(query, keep_blank_values=True)
                rebuilt = []
                for key, value in pairs:
                    if value and (_SECRET_KEYS.search(key) or _TOKENISH.match(value)):
                        value = self.placeholder("SECRET", value)
                        rebuilt.append(f"{quote(key, safe='')}={value}")
                    else:
                        rebuilt.append(f"{quote(key, safe='')}={quote(value, safe='')}")
                query = "&".join(rebuilt)
            fragment = parts.fragment
            if fragment and "=" in fragment:
                fragment = "&".join(
                    f"{k}={self.placeholder('SECRET', v) if v else v}"
                    for k, v in parse_qsl(fragment, keep_blank_values=True)
                )
            path = parts.path
            # Tokens as path segments (reset links, signed downloads).
            segments = [
                self.placeholder("SECRET", seg) if len(seg) >= 24 and _TOKENISH.match(seg) else seg
                for seg in path.split("/")
            ]
            path = "/".join(segments)
            return urlunsplit((parts.scheme, netloc, path, query, fragment)) + trail

        return _URL.sub(one, text)

    def _iban(self, match: re.Match[str]) -> str:
        raw = match.group(0)
        groups = raw.split(" ")
        # The pattern may swallow a following word: drop trailing groups until it checks out.
        for end in range(len(groups), 0, -1):
            candidate = " ".join(groups[:end])
            if iban_valid(candidate):
                rest = raw[len(candidate) :]
                compact = candidate.replace(" ", "").upper()
                return self.placeholder("IBAN", compact) + rest
        return raw

    def _card(self, match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if luhn_valid(digits):
            return self.placeholder("CARD", digits)
        return match.group(0)

    def _ip(self, match: re.Match[str]) -> str:
        value = match.group(0)
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return value
        return self.placeholder("IP", address.compressed)

    def _phones(self, text: str) -> str:
        pieces = []
        last = 0
        for found in phonenumbers.PhoneNumberMatcher(
            text, self.region, leniency=phonenumbers.Leniency.VALID
        ):
            # Never re-mask what a placeholder already stands for.
            if _PLACEHOLDER.search(found.raw_string):
                continue
            normalized = phonenumbers.format_number(
                found.number, phonenumbers.PhoneNumberFormat.E164
            )
            pieces.append(text[last : found.start])
            pieces.append(self.placeholder("PHONE", normalized))
            last = found.end
        pieces.append(text[last:])
        return "".join(pieces)


_COMMON_WORDS: Final = frozenset(
    {
        "admin", "agent", "app", "assistant", "bot", "customer", "desk", "from", "help",
        "helpdesk", "official", "service", "staff", "support", "team", "the", "user", "and",
    }
)  # fmt: skip
"""Words that a display name may hold ("Sam from Support") but that are nobody's name."""


def _name_variants(name: str) -> Iterable[str]:
    """A name and, for a full name, each capitalized part ("Maria Lopez" → "Maria", "Lopez")."""
    name = name.strip()
    if not name or name.lower() in _COMMON_WORDS:
        return []
    variants = [name]
    # "Lena (Lumen team)": what is in brackets describes the person, it is not their name.
    bare = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", name)
    parts = [p for p in re.split(r"[\s._-]+", bare) if p]
    if len(parts) > 1 or bare.strip() != name:
        variants.extend(
            p for p in parts if len(p) >= 3 and p[0].isupper() and p.lower() not in _COMMON_WORDS
        )
    return variants
