"""Cleaning: platform markup unwrapped, noise dropped, PII redacted, near-duplicates removed.

Noise is a turn nobody learns from: empty, emoji-only (Unicode emoji or `:shortcodes:`),
"+1" and its friends ("bump", "same here"), and status lines ("X has joined the channel",
"pinned a message", "is now online"). A conversation is kept only if, after that, it still has a
customer turn and an answer (an agent's or the bot's).

Near-duplicates: MinHash over word 3-grams (`datasketch`, 128 permutations, LSH at Jaccard
0.8), keeping the earliest of each group. MinHash rather than embeddings because the duplicates
that hurt training are copies (a macro pasted into hundreds of tickets, a thread exported twice,
a template answer to the same template question): near-identical *wording*, which Jaccard on
shingles measures exactly, in linear time on a CPU. Embeddings would also merge paraphrases,
different customers asking the same thing in their own words, which are precisely the variety
a retriever should learn from.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from training.importers.base import ImportResult, People
from training.model import Conversation, Speaker, Turn
from training.redact import ConversationRedactor, RedactionReport

__all__ = [
    "CleanReport",
    "clean",
    "deduplicate",
    "is_noise",
    "normalize_markup",
]

logger = logging.getLogger(__name__)

NOISE_LINES: Final = frozenset(
    {"+1", "-1", "++", "bump", "^", "^^", "same", "same here", "me too", "this", "up", "same issue"}
)
_STATUS = re.compile(
    r"\b(?:has joined|has left|joined the (?:channel|server|group)|left the (?:channel|server)|"
    r"was added to|were added to|was removed from|set the channel (?:topic|purpose|description)|"
    r"pinned a message|unpinned a message|renamed the channel|started a thread|started a call|"
    r"is now online|is offline|has been archived|changed the channel name)\b",
    re.IGNORECASE,
)
_SHORTCODE = re.compile(r":[a-z0-9_+\-]+(?:::[a-z0-9_\-]+)?:")
_SLACK_LINK = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]*))?>")
_SLACK_CHANNEL = re.compile(r"<#[A-Z0-9]+\|([^>]*)>")
_SLACK_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_DISCORD_EMOJI = re.compile(r"<a?:\w+:\d+>")


def normalize_markup(text: str) -> str:
    """Plain text from Slack/Discord markup: links unwrapped, channel and @here tags named."""
    text = _SLACK_LINK.sub(
        lambda m: (
            m.group(1).removeprefix("mailto:").removeprefix("tel:")
            if not m.group(2) or m.group(2) == m.group(1).split(":", 1)[-1]
            else f"{m.group(2)} ({m.group(1).removeprefix('mailto:').removeprefix('tel:')})"
        ),
        text,
    )
    text = _SLACK_CHANNEL.sub(lambda m: f"#{m.group(1)}", text)
    text = _SLACK_SPECIAL.sub(lambda m: f"@{m.group(1)}", text)
    text = _DISCORD_EMOJI.sub("", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.strip()


def _emoji_only(text: str) -> bool:
    rest = _SHORTCODE.sub("", text)
    for char in rest:
        if char.isspace():
            continue
        category = unicodedata.category(char)
        # So: symbols (emoji), Sk: modifiers, Mn/Me: variation selectors, Cf: zero-width joiners.
        if category in ("So", "Sk", "Mn", "Me", "Cf", "Po", "Pd"):
            continue
        return False
    return True


def is_noise(turn: Turn) -> str | None:
    """Why a turn is noise ("empty", "emoji", "plus_one", "status"), or None when it is not."""
    text = turn.text.strip()
    if not text:
        return "empty"
    if _emoji_only(text):
        return "emoji"
    if text.lower().rstrip("!.") in NOISE_LINES:
        return "plus_one"
    if len(text) < 120 and _STATUS.search(text) and turn.role is not Speaker.CUSTOMER:
        return "status"
    return None


@dataclass
class CleanReport:
    """What cleaning did over a run."""

    dropped_turns: Counter[str] = field(default_factory=Counter)
    dropped_conversations: Counter[str] = field(default_factory=Counter)
    redaction: RedactionReport = field(default_factory=RedactionReport)
    duplicates: int = 0
    kept: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "dropped_turns": dict(self.dropped_turns),
            "dropped_conversations": dict(self.dropped_conversations),
            "near_duplicates_removed": self.duplicates,
            "kept": self.kept,
            "redaction": self.redaction.to_json(),
        }


def clean(
    result: ImportResult,
    *,
    region: str = "US",
    dedup_threshold: float | None = 0.8,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Conversation], CleanReport]:
    """Clean every imported conversation; see the module docstring.

    Args:
        result: what the importers read (conversations and the user directory).
        region: the phone-number region for numbers written without +country code.
        dedup_threshold: Jaccard similarity above which conversations count as duplicates;
            None keeps them all.
        on_progress: called with 1 after each conversation.

    Returns:
        The kept conversations (redacted, in input order) and the report.
    """
    report = CleanReport()
    report.dropped_turns.update({f"import:{k}": v for k, v in result.dropped.items()})
    kept: list[Conversation] = []
    for conversation in result.conversations:
        cleaned = _clean_one(conversation, result.people, region, report)
        if cleaned is not None:
            kept.append(cleaned)
        if on_progress is not None:
            on_progress(1)
    if dedup_threshold is not None:
        before = len(kept)
        kept = deduplicate(kept, threshold=dedup_threshold)
        report.duplicates = before - len(kept)
        report.dropped_conversations["near_duplicate"] += report.duplicates
    report.kept = len(kept)
    return kept, report


def _clean_one(
    conversation: Conversation, people: People, region: str, report: CleanReport
) -> Conversation | None:
    turns: list[Turn] = []
    for turn in conversation.turns:
        turn = turn.with_text(normalize_markup(turn.text))
        reason = is_noise(turn)
        if reason is not None:
            report.dropped_turns[reason] += 1
            continue
        turns.append(turn)
    if not any(t.role is Speaker.CUSTOMER for t in turns):
        report.dropped_conversations["no_customer"] += 1
        return None
    if not any(t.role is not Speaker.CUSTOMER for t in turns):
        report.dropped_conversations["no_answer"] += 1
        return None
    redactor = ConversationRedactor(people, region=region)
    redacted = []
    for turn in turns:
        # Authors are always replaced; only what is found in the text counts as a finding.
        author = (
            turn.author if turn.role is Speaker.BOT else redactor.person(turn.author, count=False)
        )
        redacted.append(replace(turn, text=redactor.redact(turn.text), author=author))
    report.redaction.add(redactor.counts, bool(redactor.counts))
    return replace(conversation, turns=tuple(redacted))


def _shingles(conversation: Conversation, size: int = 3) -> set[str]:
    words = re.findall(r"\w+", " ".join(t.text for t in conversation.turns).lower())
    if len(words) < size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def deduplicate(
    conversations: Sequence[Conversation], *, threshold: float = 0.8, num_perm: int = 128
) -> list[Conversation]:
    """Drop near-duplicate conversations (MinHash LSH on word 3-grams), keeping the earliest.

    "Earliest" is by start time where known, else by position in the input.
    """
    from datasketch import MinHash, MinHashLSH

    never = datetime.max.replace(tzinfo=UTC)
    order = sorted(range(len(conversations)), key=lambda i: (conversations[i].started or never, i))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    keep: set[int] = set()
    for i in order:
        signature = MinHash(num_perm=num_perm, seed=1)
        for shingle in _shingles(conversations[i]):
            signature.update(shingle.encode("utf-8"))
        if lsh.query(signature):
            continue
        lsh.insert(str(i), signature)
        keep.add(i)
    return [c for i, c in enumerate(conversations) if i in keep]
