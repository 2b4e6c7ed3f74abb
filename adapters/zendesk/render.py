"""Replies, handoff notes and transcripts → Zendesk comments (pure functions).

Comments are written as ``html_body``: the bot's text is Markdown (knowledge-base answers often
are), rendered with raw HTML switched off so nothing a customer or an article wrote becomes markup;
sources become links. Zendesk sanitises comment HTML again on its side.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt

from adapters.zendesk.payloads import CommentWrite
from adapters.zendesk.sentiment import Sentiment
from bot.model import Reply, ReplyKind, Role, Source, Turn

__all__ = [
    "HandoffNote",
    "handoff_note",
    "markdown_html",
    "reply_comment",
    "sources_html",
    "transcript_comment",
]

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "breaks": True})
_ROLE_NAMES = {Role.USER: "Customer", Role.BOT: "Bot", Role.AGENT: "Agent"}


@dataclass(frozen=True, slots=True)
class HandoffNote:
    """What the agents' internal note on a handed-off ticket says.

    Attributes:
        reason: why the ticket is handed over.
        question: the customer's question.
        answer: what the bot last answered, if anything.
        sources: the knowledge-base entries that answer drew on.
        sentiment: how the customer sounds.
        transcript: the conversation so far, oldest first.
    """

    reason: str
    question: str | None
    answer: str | None
    sources: tuple[Source, ...]
    sentiment: Sentiment | None
    transcript: tuple[Turn, ...] = ()


def markdown_html(text: str) -> str:
    """Markdown → HTML, raw HTML escaped, single line breaks kept."""
    rendered: str = _MARKDOWN.render(text)
    return rendered.strip()


def _link(source: Source) -> str:
    title = html.escape(source.title or source.id)
    url = source.url
    if url and url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url, quote=True)}">{title}</a>'
    return title


def sources_html(sources: Sequence[Source], heading: str = "Sources") -> str:
    """A list of sources as links (titles alone where a source has no web address)."""
    if not sources:
        return ""
    items = "".join(f"<li>{_link(source)}</li>" for source in sources)
    return f"<p><strong>{html.escape(heading)}</strong></p><ul>{items}</ul>"


def reply_comment(reply: Reply, *, author_id: int) -> CommentWrite:
    """The bot's public comment for a reply: its text, then its sources as links."""
    parts = [markdown_html(reply.text)]
    if reply.kind is ReplyKind.ANSWER:
        parts.append(sources_html(reply.sources))
    elif reply.kind is ReplyKind.CLARIFY:
        parts.append(sources_html([s for s in reply.sources if s.url], "Related articles"))
    return {"html_body": "".join(p for p in parts if p), "public": True, "author_id": author_id}


def _turns_html(turns: Sequence[Turn]) -> str:
    rows = "".join(
        f"<li><strong>{_ROLE_NAMES.get(turn.role, str(turn.role))}:</strong> "
        f"{html.escape(turn.text)}</li>"
        for turn in turns
    )
    return f"<ul>{rows}</ul>" if rows else ""


def handoff_note(note: HandoffNote, *, author_id: int) -> CommentWrite:
    """The internal note that hands a ticket to the agents."""
    parts = [
        "<p><strong>Handed over by the support bot.</strong> "
        f"Reason: {html.escape(note.reason)}</p>",
    ]
    if note.question:
        parts.append(f"<p><strong>Question:</strong> {html.escape(note.question)}</p>")
    if note.answer:
        parts.append("<p><strong>The bot answered:</strong></p>")
        parts.append(f"<blockquote>{markdown_html(note.answer)}</blockquote>")
        parts.append(sources_html(note.sources, "From these sources"))
    else:
        parts.append("<p>The bot has not answered on this ticket.</p>")
    if note.sentiment is not None:
        line = (
            f"<p><strong>Customer sentiment:</strong> {html.escape(note.sentiment.label)} "
            f"({note.sentiment.score:+.2f} on a scale from -1 to +1)"
        )
        if note.sentiment.most_negative:
            line += f"; most negative: “{html.escape(note.sentiment.most_negative)}”"
        parts.append(line + "</p>")
    if note.transcript:
        parts.append("<p><strong>Conversation so far:</strong></p>")
        parts.append(_turns_html(note.transcript))
    return {"html_body": "".join(p for p in parts if p), "public": False, "author_id": author_id}


def transcript_comment(
    transcript: Sequence[Turn], *, customer: str, platform: str, author_id: int
) -> CommentWrite:
    """The internal note that opens a ticket for a customer of another platform."""
    parts = [
        f"<p>Customer <strong>{html.escape(customer)}</strong> on "
        f"<strong>{html.escape(platform)}</strong> asked for a person. Public replies on this "
        "ticket are relayed to them.</p>",
        _turns_html(transcript) or "<p>(no messages yet)</p>",
    ]
    return {"html_body": "".join(parts), "public": False, "author_id": author_id}
