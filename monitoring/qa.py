"""The quality-assurance pass: every reply checked against configurable guidelines.

The guidelines live in a YAML file (``SUPPORTBOT_QA_GUIDELINES``; the bundled
`monitoring/qa_default.yaml` otherwise) and are validated once, when loaded. Rules, each with the
name it is flagged under:

=================  ===================================================================
 rule               a reply breaks it when
=================  ===================================================================
 length             it is longer than ``max_chars`` characters
 caps               it has more than ``tone.max_caps_words`` ALL CAPS words of at least
                    ``tone.caps_min_letters`` letters
 exclamations       it has more than ``tone.max_exclamations`` "!"
 negative_tone      its VADER compound score is below ``tone.min_sentiment``
 forbidden_phrase   it contains one of ``forbidden_phrases`` (case-insensitive, whole words)
 link               an http(s) link in it is not a knowledge-base URL (fragment, query and
                    trailing slash ignored) and starts with none of ``links.allowed_prefixes``
=================  ===================================================================

`check_reply` is pure; `run_qa` checks the stored replies and flags breaches into the review
queue (`monitoring.review.ReviewQueue.flag`), so reviewers see them beside the sampled replies.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bot.errors import ConfigError
from bot.storage.tables import ReplyRecord
from monitoring.review import ReviewQueue
from policies.sentiment import compound

__all__ = [
    "DEFAULT_GUIDELINES",
    "ENV_VARIABLE",
    "Guidelines",
    "QAReport",
    "Violation",
    "check_reply",
    "load_guidelines",
    "run_qa",
]

logger = logging.getLogger(__name__)

DEFAULT_GUIDELINES: Final[Path] = Path(__file__).resolve().parent / "qa_default.yaml"
ENV_VARIABLE: Final = "SUPPORTBOT_QA_GUIDELINES"

_URL = re.compile(r"https?://[^\s<>()\[\]\"'`]+", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


class ToneRules(BaseModel):
    """Tone limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_caps_words: int = Field(default=0, ge=0)
    caps_min_letters: int = Field(default=5, ge=2)
    max_exclamations: int = Field(default=2, ge=0)
    min_sentiment: float = Field(default=-0.5, ge=-1.0, le=1.0)


class LinkRules(BaseModel):
    """Which links a reply may contain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: bool = True
    allowed_prefixes: tuple[str, ...] = ()


class Guidelines(BaseModel):
    """What every reply must respect; see the module docstring for each rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_chars: int = Field(default=1200, gt=0)
    tone: ToneRules = ToneRules()
    forbidden_phrases: tuple[str, ...] = ()
    links: LinkRules = LinkRules()


def load_guidelines(path: Path | str | None = None) -> Guidelines:
    """Load and validate the QA guidelines: `path`, or the bundled defaults.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema; the message names the
            file, the key and how to fix it.
    """
    file = Path(path) if path is not None else DEFAULT_GUIDELINES
    try:
        data = yaml.safe_load(file.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: no such QA guidelines file; fix {ENV_VARIABLE} to name an existing YAML "
            "file, or unset it to use the bundled defaults"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{file}: cannot read the QA guidelines as YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the QA guidelines must be a YAML mapping (key: value)")
    try:
        return Guidelines.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(
            f"{file}: invalid QA guidelines ({problems}); see monitoring/qa_default.yaml for "
            "the keys and their meaning"
        ) from e


@dataclass(frozen=True, slots=True)
class Violation:
    """One guideline a reply breaks: the rule's name and what was found."""

    rule: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "detail": self.detail}


def normalize_url(url: str) -> str:
    """A URL without fragment, query, trailing slash or trailing punctuation, host lower-cased."""
    url = url.rstrip(".,;:!?*_")
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def check_reply(text: str, guidelines: Guidelines, kb_urls: Iterable[str] = ()) -> list[Violation]:
    """Every guideline `text` breaks, in rule order (empty when it is fine).

    Args:
        text: the reply.
        guidelines: the rules.
        kb_urls: the knowledge base's URLs; links elsewhere are flagged.
    """
    found: list[Violation] = []
    if len(text) > guidelines.max_chars:
        found.append(Violation("length", f"{len(text)} characters (limit {guidelines.max_chars})"))
    tone = guidelines.tone
    shouting = [w for w in _WORD.findall(text) if len(w) >= tone.caps_min_letters and w.isupper()]
    if len(shouting) > tone.max_caps_words:
        found.append(Violation("caps", f"ALL CAPS: {', '.join(shouting[:5])}"))
    exclamations = text.count("!")
    if exclamations > tone.max_exclamations:
        found.append(
            Violation("exclamations", f"{exclamations} '!' (limit {tone.max_exclamations})")
        )
    score = compound(text)
    if score < tone.min_sentiment:
        found.append(
            Violation("negative_tone", f"VADER {score:.2f} (limit {tone.min_sentiment:.2f})")
        )
    lowered = text.lower()
    for phrase in guidelines.forbidden_phrases:
        pattern = r"(?<!\w)" + re.escape(phrase.lower().strip()) + r"(?!\w)"
        if phrase.strip() and re.search(pattern, lowered):
            found.append(Violation("forbidden_phrase", f"contains {phrase!r}"))
    if guidelines.links.check:
        known = {normalize_url(u) for u in kb_urls if u}
        prefixes = tuple(p.lower() for p in guidelines.links.allowed_prefixes)
        for raw in _URL.findall(text):
            url = normalize_url(raw)
            if url in known or (prefixes and url.lower().startswith(prefixes)):
                continue
            found.append(Violation("link", f"{raw.rstrip('.,;:!?*_')} is not a knowledge-base URL"))
    return found


@dataclass(frozen=True, slots=True)
class QAReport:
    """What a QA pass found.

    Attributes:
        checked: replies checked.
        flagged: replies with at least one breach.
        by_rule: breaches per rule.
        examples: a few (reply id, violation) pairs, for the report.
    """

    checked: int
    flagged: int
    by_rule: dict[str, int] = field(default_factory=dict)
    examples: tuple[tuple[str, Violation], ...] = ()


def run_qa(
    engine: Engine,
    guidelines: Guidelines,
    kb_urls: Iterable[str],
    queue: ReviewQueue,
    *,
    since: datetime | None = None,
    on_progress: Callable[[int, int], Any] | None = None,
) -> QAReport:
    """Check every stored reply (made since `since`) and flag breaches into the review queue.

    Running it again is safe: a reply's breaches are replaced, never added twice.

    Args:
        engine: the bot's database.
        guidelines: the rules.
        kb_urls: the knowledge base's URLs.
        queue: where breaches are flagged.
        since: only replies made since then (all when None).
        on_progress: called with (done, total) as replies are checked.
    """
    urls = tuple(kb_urls)
    query = select(ReplyRecord.id, ReplyRecord.text).order_by(col(ReplyRecord.created_at))
    if since is not None:
        query = query.where(col(ReplyRecord.created_at) >= since)
    with Session(engine) as session:
        rows = list(session.exec(query))
    by_rule: Counter[str] = Counter()
    examples: list[tuple[str, Violation]] = []
    flagged = 0
    for done, (reply_id, text) in enumerate(rows, start=1):
        violations = check_reply(text, guidelines, urls)
        queue.flag(reply_id, [v.to_json() for v in violations])
        if violations:
            flagged += 1
            by_rule.update(v.rule for v in violations)
            if len(examples) < 10:
                examples.append((reply_id, violations[0]))
        if on_progress is not None:
            on_progress(done, len(rows))
    logger.info("QA pass: %d replies checked, %d flagged", len(rows), flagged)
    return QAReport(len(rows), flagged, dict(by_rule), tuple(examples))
