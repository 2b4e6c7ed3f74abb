"""The shared model → Slack messages (Block Kit and mrkdwn). Pure.

The engine's answers are Markdown written by whoever keeps the knowledge base; Slack reads its
own "mrkdwn". `to_mrkdwn` converts the common subset (bold, italics, strike, code, links,
headings, lists, quotes) and escapes ``& < >`` everywhere else, so no text can smuggle in a
``<!channel>`` ping or a disguised link. Text people typed (questions, transcripts) is only
escaped (`escape`), never interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.slack.payloads import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MessageMetadata,
    MrkdwnText,
    SectionBlock,
)
from bot.model import ActionKind, Reply, Role, Source, Turn

__all__ = [
    "METADATA_EVENT_TYPE",
    "HandoffCard",
    "OutboundMessage",
    "button_label",
    "escape",
    "handoff_card",
    "reply_message",
    "split_text",
    "to_mrkdwn",
]

#: ``metadata.event_type`` of every reply the bot posts; ``event_payload.reply_id`` names it.
METADATA_EVENT_TYPE = "supportbot_reply"
#: Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks).
SECTION_LIMIT = 3000
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
HEADER_LIMIT = 150
MAX_SECTIONS = 10
#: The message ``text`` (notification and fallback) stays well under Slack's 40,000.
TEXT_LIMIT = 4000

#: Action ids of the quick-reason buttons offered after a 👎: this prefix and the reason.
REASON_ACTION_PREFIX = "feedback_reason_"

_ACTION_IDS = {
    ActionKind.FEEDBACK_UP: "feedback_up",
    ActionKind.FEEDBACK_DOWN: "feedback_down",
    ActionKind.HANDOFF: "handoff",
}


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What `chat.postMessage` gets: fallback text, blocks and metadata (None: no metadata)."""

    text: str
    blocks: list[Block]
    metadata: MessageMetadata | None = None


@dataclass(frozen=True, slots=True)
class HandoffCard:
    """What agents see when a conversation needs a person.

    Attributes:
        customer: the customer's platform user id (or name).
        platform: where the customer is ("slack", "web", ...).
        question: the customer's question, as they wrote it.
        tried: what the bot answered, if anything (engine Markdown).
        sources: the knowledge-base entries that answer drew on.
        transcript: the conversation so far, oldest first.
        conversation: the conversation key, for the record.
    """

    customer: str
    platform: str
    question: str
    tried: str | None = None
    sources: tuple[Source, ...] = ()
    transcript: tuple[Turn, ...] = field(default=())
    conversation: str = ""


# Text ------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape Slack's three control characters, as Slack asks for any text it should show."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_FENCE = re.compile(r"```[^\n]*\n?(.*?)```", re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^>\s]+)>")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_QUOTE = re.compile(r"^&gt;\s?", re.MULTILINE)
_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_HOLD = "\x00{}\x00"
_HELD = re.compile(r"\x00(\d+)\x00")
_BOLD_MARK = "\x01"


def _link(url: str, label: str) -> str:
    label = escape(label).replace("|", "¦")
    if not url.startswith(_SAFE_SCHEMES):
        # Not a web link: show it as text rather than make something clickable.
        return f"{label} ({escape(url)})"
    safe_url = escape(url).replace("|", "%7C")
    return f"<{safe_url}|{label}>" if label else f"<{safe_url}>"


def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to Slack mrkdwn, escaping everything that is not formatting.

    ``**bold**`` → ``*bold*``, ``*italic*``/``_italic_`` → ``_italic_``, ``~~strike~~`` →
    ``~strike~``, ``[text](url)`` → ``<url|text>`` (http, https and mailto only), headings → bold
    lines, ``-``/``*`` list items → ``•``; code spans and blocks are kept, their content escaped.
    """
    held: list[str] = []

    def hold(rendered: str) -> str:
        held.append(rendered)
        return _HOLD.format(len(held) - 1)

    text = _FENCE.sub(lambda m: hold("```" + escape(m.group(1).rstrip("\n")) + "```"), markdown)
    text = _CODE_SPAN.sub(lambda m: hold("`" + escape(m.group(1)) + "`"), text)
    text = _LINK.sub(lambda m: hold(_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: hold(_link(m.group(1), "")), text)
    text = escape(text)
    text = _QUOTE.sub("> ", text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1).replace('**', '')}{_BOLD_MARK}", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _HELD.sub(lambda m: held[int(m.group(1))], text)


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split text into pieces of at most ``limit`` characters, at paragraph, line or word
    boundaries where possible."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = rest.rfind(separator, 0, limit)
            if cut > limit // 2:
                break
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def button_label(label: str) -> str:
    """A button's text, cut to Slack's 75 characters."""
    return _truncate(label, BUTTON_TEXT_LIMIT)


# Blocks ----------------------------------------------------------------------------------------


def _mrkdwn(text: str) -> MrkdwnText:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> SectionBlock:
    return {"type": "section", "text": _mrkdwn(text)}


def _sections(mrkdwn: str) -> list[SectionBlock]:
    pieces = split_text(mrkdwn) or [" "]
    if len(pieces) > MAX_SECTIONS:
        pieces = [*pieces[: MAX_SECTIONS - 1], _truncate(pieces[MAX_SECTIONS - 1], 2990) + " …"]
    return [_section(piece) for piece in pieces]


def _source_link(source: Source) -> str:
    title = source.title or source.id
    if source.url and source.url.startswith(("http://", "https://")):
        return _link(source.url, title)
    return escape(title)


def _sources_block(sources: Sequence[Source]) -> ContextBlock:
    links = " · ".join(_source_link(source) for source in sources)
    return {"type": "context", "elements": [_mrkdwn(_truncate(f"Sources: {links}", 2990))]}


def _button(label: str, action_id: str, value: str) -> ButtonElement:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": button_label(label), "emoji": True},
        "action_id": action_id,
        "value": value[:BUTTON_VALUE_LIMIT],
    }


def _buttons(reply: Reply) -> list[ButtonElement]:
    buttons: list[ButtonElement] = []
    choice = 0
    for action in reply.actions:
        if action.kind is ActionKind.CHOOSE:
            # action_id must be unique within the block: one per option.
            buttons.append(_button(action.label, f"choose_{choice}", action.value or action.label))
            choice += 1
        elif reply.id and action.kind is ActionKind.FEEDBACK_REASON:
            # The quick reasons after a 👎: one action id per reason, the value names the reply.
            buttons.append(_button(action.label, f"{REASON_ACTION_PREFIX}{action.value}", reply.id))
        elif reply.id:
            # Feedback and handoff buttons name the reply; without an id there is nothing to rate.
            buttons.append(_button(action.label, _ACTION_IDS[action.kind], reply.id))
    return buttons[:25]


def reply_message(reply: Reply) -> OutboundMessage:
    """A reply as a Slack message.

    Blocks: the answer in mrkdwn sections; for answers, a context line of sources as links;
    an actions block with 👍/👎 and "Talk to a person" (value: the reply id) or, for a clarify
    reply, one ``choose_<n>`` button per option (value: the option's id). The ``text`` fallback
    is the answer alone; metadata carries the reply id so a repeated post can be recognised.
    """
    body = to_mrkdwn(reply.text)
    blocks: list[Block] = [*_sections(body)]
    if reply.sources and not any(a.kind is ActionKind.CHOOSE for a in reply.actions):
        blocks.append(_sources_block(reply.sources))
    buttons = _buttons(reply)
    if buttons:
        actions: ActionsBlock = {"type": "actions", "elements": buttons}
        if reply.id:
            actions["block_id"] = f"reply:{reply.id}"[:255]
        blocks.append(actions)
    metadata: MessageMetadata | None = None
    # The quick reasons carry the rated reply's id but are not that reply: no metadata.
    if reply.id and not any(a.kind is ActionKind.FEEDBACK_REASON for a in reply.actions):
        metadata = {"event_type": METADATA_EVENT_TYPE, "event_payload": {"reply_id": reply.id}}
    return OutboundMessage(_truncate(body, TEXT_LIMIT), blocks, metadata)


_ROLE_NAMES = {Role.USER: "Customer", Role.BOT: "Bot", Role.AGENT: "Agent"}


def _customer(customer: str, platform: str) -> str:
    if platform == "slack" and re.fullmatch(r"[UW][A-Z0-9]+", customer):
        return f"<@{customer}>"
    return escape(customer)


def _transcript(turns: Sequence[Turn], limit: int = SECTION_LIMIT - 40) -> str:
    lines = [f"*{_ROLE_NAMES[turn.role]}:* {escape(turn.text)}" for turn in turns]
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        line = _truncate(line, 600)
        if used + len(line) + 1 > limit:
            kept.append("…")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(reversed(kept))


def handoff_card(card: HandoffCard) -> OutboundMessage:
    """The card posted in the agents' channel when a conversation needs a person.

    Everything the customer wrote is escaped; the bot's answer is converted from Markdown. The
    transcript keeps its latest lines when it is too long for one section.
    """
    customer = _customer(card.customer, card.platform)
    question = _truncate(escape(card.question), 2000)
    header: HeaderBlock = {
        "type": "header",
        "text": {"type": "plain_text", "text": "A customer would like a person", "emoji": True},
    }
    blocks: list[Block] = [
        header,
        _section(f"*Customer:* {customer} on {escape(card.platform)}\n*Question:* {question}"),
    ]
    if card.tried:
        tried = _truncate(to_mrkdwn(card.tried), SECTION_LIMIT - 40)
        blocks.append(_section(f"*What the bot tried:*\n{tried}"))
    if card.sources:
        blocks.append(_sources_block(card.sources))
    if card.transcript:
        blocks.append(_section(f"*Transcript:*\n{_transcript(card.transcript)}"))
    context = "Reply in this thread to answer the customer."
    if card.conversation:
        context += f" Conversation `{escape(card.conversation)}`."
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    text = _truncate(f"A customer would like a person: {question}", TEXT_LIMIT)
    return OutboundMessage(text, blocks)
