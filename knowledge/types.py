"""What ingestion produces: knowledge-base entries, independent of the source format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def content_id(*parts: str, length: int = 16) -> str:
    """A stable id from content: the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


#: The tag of an entry listing questions the bot must *not* answer (see `Entry.declines`).
DECLINE_TAG = "out-of-scope"


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
            An entry tagged ``out-of-scope`` (`DECLINE_TAG`) lists questions the bot must not
            answer: when it ranks first, the bot falls back instead of answering (`declines`).
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
    def declines(self) -> bool:
        """Whether this entry marks questions to decline rather than answer.

        Its examples are what customers ask that the knowledge base must not answer (another
        team's topics, requests the bot may not handle). They sit in the index like any other
        examples, so a question that resembles them finds this entry first and gets the
        fallback, not a wrong answer that merely resembles it.
        """
        return DECLINE_TAG in self.tags

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


@dataclass(frozen=True, slots=True)
class Context:
    """What a follow-up is read in (`Retriever.retrieve_follow_up`): the customer's last
    question and the topic of the bot's answer to it.

    A context is searched by its words (`text`) and by the normalised sum of its parts'
    vectors. Each part's vector usually exists already: the question's was computed for its
    own turn (the query cache keeps it), and a topic that is an entry's question
    (`topic_entry`) has its vector in the index. A follow-up then costs no forward pass of its
    own, where embedding the joined text would.

    Attributes:
        question: the customer's last question, if any.
        topic: what the bot's answer was about (the answering entry's question, or the reply's
            first sentence), if anything.
        topic_entry: the id of the entry whose question `topic` is, if it is one.
    """

    question: str | None
    topic: str | None = None
    topic_entry: str | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        """The question and the topic, those that are there."""
        return tuple(p for p in (self.question, self.topic) if p)

    @property
    def text(self) -> str:
        """The parts joined: what the context's words are searched with."""
        return " ".join(self.parts)
