"""What ingestion produces: knowledge-base entries, independent of the source format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def content_id(*parts: str, length: int = 16) -> str:
    """A stable id from content: the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


@dataclass(frozen=True, slots=True)
class Entry:
    """One answerable unit of the knowledge base.

    An FAQ line is one entry (its id is the id given in the file); an article is split into
    passages by headings and length, each passage an entry whose id is a content hash.

    Attributes:
        id: unique in the knowledge base.
        answer: the text the bot shows when it answers with this entry.
        question: the canonical question or the passage's heading, if any.
        examples: other ways customers ask for this entry; each is indexed and maps back here.
        title: a human title (FAQ title, or article title).
        url: where a person can read more.
        tags: free labels.
        source: where the entry came from (a file path or an origin like "zendesk:help-center");
            re-ingesting a source replaces exactly the entries that came from it.
        heading_path: for article passages, the headings above the passage, outermost first.
    """

    id: str
    answer: str
    question: str | None = None
    examples: tuple[str, ...] = ()
    title: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = ()
    source: str = ""
    heading_path: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """A hash of everything that affects retrieval or display; changes when the entry does."""
        return content_id(
            self.id,
            self.answer,
            self.question or "",
            "\x1e".join(self.examples),
            self.title or "",
            self.url or "",
            "\x1e".join(self.tags),
            "\x1e".join(self.heading_path),
        )
