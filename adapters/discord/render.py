"""Pure rendering: the shared model's replies and handoff cards as Discord messages.

Nothing here talks to Discord or imports discord.py; `client.py` turns the results into API calls.

* `render_reply` makes one or more message chunks of at most 2,000 characters. Text is split at
  line breaks, else between words; a code block cut across two messages is closed at the end of
  the first and reopened (with its language) at the start of the next. Sources become masked
  links; buttons go on the last chunk.
* Buttons have fixed custom ids (`UP_ID`, `DOWN_ID`, `HANDOFF_ID`, `choose_id(i)`), so one
  persistent view registered at start-up answers clicks on every message, across restarts: the
  reply is found from the message the button is on, never from the custom id.
* `handoff_embed` renders the card posted in the agents' channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.discord.payloads import EmbedFieldPayload, EmbedPayload
from bot.model import Action, ActionKind, ConversationKey, Reply, ReplyKind, Role, Source, Turn

__all__ = [
    "CHOOSE_PREFIX",
    "DOWN_ID",
    "HANDOFF_ID",
    "MAX_CHOICES",
    "MESSAGE_LIMIT",
    "REASON_PREFIX",
    "REASON_TEMPLATE",
    "UP_ID",
    "ButtonSpec",
    "Chunk",
    "HandoffCard",
    "buttons_for",
    "choose_id",
    "conversation_from_footer",
    "escape_markdown",
    "format_sources",
    "handoff_embed",
    "masked_link",
    "persistent_buttons",
    "reason_id",
    "render_reply",
    "split_message",
    "thread_name",
]

#: Discord's limit on a message's content.
MESSAGE_LIMIT = 2000
#: Discord's limit on a thread's name.
THREAD_NAME_LIMIT = 100
#: Discord's limit on a button's label.
BUTTON_LABEL_LIMIT = 80
#: One action row holds five buttons; a clarifying question offers at most this many choices.
MAX_CHOICES = 5

UP_ID = "supportbot:up"
DOWN_ID = "supportbot:down"
HANDOFF_ID = "supportbot:handoff"
#: Quick-reason buttons (after a 👎) are ``supportbot:reason:<reason>:<rated reply id>``: they are
#: sent on a message of their own, so the id names the reply (a dynamic item, not the view).
REASON_PREFIX = "supportbot:reason:"
REASON_TEMPLATE = r"supportbot:reason:(?P<reason>[a-z_]{1,32}):(?P<reply>[0-9A-Za-z_-]{1,64})"
CHOOSE_PREFIX = "supportbot:choose:"

# Button styles (https://discord.com/developers/docs/components/reference#button-button-styles).
PRIMARY, SECONDARY, SUCCESS, DANGER = 1, 2, 3, 4

_FENCE = "```"
_MARKDOWN_SPECIAL = re.compile(r"([\\*_~`|\[\]>#-])")
_WHITESPACE = re.compile(r"\s+")


def choose_id(index: int) -> str:
    """The custom id of the clarify button for option `index` (0-based)."""
    return f"{CHOOSE_PREFIX}{index}"


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """One button, as `client.py` builds it.

    Attributes:
        custom_id: fixed id the persistent view dispatches on.
        label: the text on it ("" for an emoji-only button).
        style: a Discord button style (1 primary, 2 secondary, 3 success, 4 danger).
        emoji: a unicode emoji shown before the label.
    """

    custom_id: str
    label: str
    style: int = SECONDARY
    emoji: str | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One Discord message of a reply; only the last chunk carries buttons."""

    content: str
    buttons: tuple[ButtonSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class HandoffCard:
    """What agents see when a conversation needs a person.

    Attributes:
        conversation: where the customer is.
        customer: the customer's display name or id.
        platform: where they wrote from ("discord", "slack", "web", ...).
        question: what they asked.
        attempts: what the bot answered, oldest first.
        sources: knowledge-base entries the bot used.
        transcript: the conversation so far, oldest first.
        link: a URL that opens the conversation, where the platform has one.
    """

    conversation: ConversationKey
    customer: str
    platform: str
    question: str
    attempts: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    transcript: tuple[Turn, ...] = ()
    link: str | None = None


# Buttons ---------------------------------------------------------------------------------------

_FEEDBACK_BUTTONS = {
    ActionKind.FEEDBACK_UP: ButtonSpec(UP_ID, "Helpful", SECONDARY, "👍"),
    ActionKind.FEEDBACK_DOWN: ButtonSpec(DOWN_ID, "Not helpful", SECONDARY, "👎"),
}


def _label(text: str, limit: int = BUTTON_LABEL_LIMIT) -> str:
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _button(action: Action, choice_index: int) -> ButtonSpec | None:
    if action.kind in _FEEDBACK_BUTTONS:
        return _FEEDBACK_BUTTONS[action.kind]
    if action.kind is ActionKind.HANDOFF:
        return ButtonSpec(HANDOFF_ID, _label(action.label) or "Talk to a person", PRIMARY)
    if action.kind is ActionKind.CHOOSE and choice_index < MAX_CHOICES:
        return ButtonSpec(choose_id(choice_index), _label(action.label) or "This one", PRIMARY)
    return None


def reason_id(reason: str, reply_id: str) -> str:
    """The custom id of the quick-reason button `reason` for the rated reply `reply_id`."""
    return f"{REASON_PREFIX}{reason}:{reply_id}"


def buttons_for(reply: Reply) -> tuple[ButtonSpec, ...]:
    """The buttons offered with a reply, from its actions (at most one row of five)."""
    buttons: list[ButtonSpec] = []
    choices = 0
    for action in reply.actions:
        button = _button(action, choices)
        if action.kind is ActionKind.FEEDBACK_REASON and reply.id:
            button = ButtonSpec(reason_id(action.value, reply.id), _label(action.label), SECONDARY)
        if action.kind is ActionKind.CHOOSE:
            choices += 1
        if button is not None and button not in buttons:
            buttons.append(button)
    return tuple(buttons[:5])


def persistent_buttons() -> tuple[ButtonSpec, ...]:
    """Every button the bot ever sends: the persistent view registered at start-up."""
    return (
        _FEEDBACK_BUTTONS[ActionKind.FEEDBACK_UP],
        _FEEDBACK_BUTTONS[ActionKind.FEEDBACK_DOWN],
        ButtonSpec(HANDOFF_ID, "Talk to a person", PRIMARY),
        *(ButtonSpec(choose_id(i), f"Option {i + 1}", PRIMARY) for i in range(MAX_CHOICES)),
    )


# Text ------------------------------------------------------------------------------------------


def escape_markdown(text: str) -> str:
    """Text shown literally in Discord markdown (titles inside links and embeds)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def masked_link(title: str, url: str) -> str:
    """A masked link; the angle brackets stop Discord from unfurling a preview of it."""
    safe_url = url.strip().replace(" ", "%20").replace(")", "%29").replace(">", "%3E")
    return f"[{escape_markdown(title)}](<{safe_url}>)"


def format_sources(sources: Sequence[Source]) -> str:
    """A line naming the sources, as masked links where they have a URL; "" for none."""
    seen: set[tuple[str, str | None]] = set()
    parts: list[str] = []
    for source in sources:
        title = _WHITESPACE.sub(" ", source.title or source.id).strip()
        key = (title, source.url)
        if key in seen:
            continue
        seen.add(key)
        if source.url and source.url.startswith(("http://", "https://")):
            parts.append(masked_link(title, source.url))
        else:
            parts.append(f"*{escape_markdown(title)}*")
    if not parts:
        return ""
    label = "Source" if len(parts) == 1 else "Sources"
    return f"-# {label}: " + " · ".join(parts)


def thread_name(text: str) -> str:
    """A thread name from the question: one line, at most 100 characters, cut between words."""
    name = _WHITESPACE.sub(" ", text).strip()
    if not name:
        return "Support question"
    if len(name) <= THREAD_NAME_LIMIT:
        return name
    cut = name[: THREAD_NAME_LIMIT - 1]
    if " " in cut[THREAD_NAME_LIMIT // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"


def _fence_info(line: str) -> str:
    """The fence line that reopens the code block `line` opened (keeps its language)."""
    stripped = line.strip()
    if stripped.startswith(_FENCE):
        info = stripped[len(_FENCE) :].strip()
        # Only a language name is worth repeating; "```code```" lines never open a block.
        if info and " " not in info and len(info) <= 20:
            return _FENCE + info
    return _FENCE


def _toggles_fence(line: str) -> bool:
    return line.count(_FENCE) % 2 == 1


def _pieces(line: str, size: int) -> list[str]:
    """`line` cut into pieces of at most `size` characters, between words where possible."""
    if len(line) <= size:
        return [line]
    pieces: list[str] = []
    current = ""
    for token in re.split(r"(\s+)", line):
        if not token:
            continue
        if len(current) + len(token) <= size:
            current += token
            continue
        if current.strip():
            pieces.append(current.rstrip())
        current = "" if token.isspace() else token
        while len(current) > size:
            # A single word longer than a whole message (a URL, a hash): cutting it is the
            # only way to send it.
            pieces.append(current[:size])
            current = current[size:]
    if current.strip():
        pieces.append(current.rstrip())
    return pieces or [""]


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into messages of at most `limit` characters.

    Splits at line breaks, else between words; a word is cut only when it alone is longer than a
    message. A code block that spans two messages is closed with ``` at the end of the first and
    reopened (with its language) at the start of the next, so each message renders on its own.

    Args:
        text: Discord markdown.
        limit: the most characters per message.

    Returns:
        The messages, none empty; [] for blank text.
    """
    if limit < 40:
        raise ValueError("limit must leave room for code fences (40 characters or more)")
    text = text.strip()
    if not text:
        return []
    if len(text) <= limit and text.count(_FENCE) % 2 == 0:
        return [text]

    chunks: list[str] = []
    current: list[str] = []
    size = -1  # len("\n".join(current)), -1 when empty: adding a line costs 1 + len(line)
    fresh = True  # `current` holds nothing of the text yet (at most a reopened fence)
    fence: str | None = None  # the fence line of the code block open at the end of `current`
    close_cost = len("\n" + _FENCE)

    def flush() -> None:
        nonlocal current, size, fresh
        if not fresh:
            lines = [*current, _FENCE] if fence is not None else current
            chunks.append("\n".join(lines).strip("\n"))
        current = [fence] if fence is not None else []
        size = len(fence) if fence is not None else -1
        fresh = True

    for line in text.split("\n"):
        after = fence
        if _toggles_fence(line):
            after = None if fence is not None else _fence_info(line)
        # A piece must fit in a chunk that reopens the block and still has room to close it.
        reserve = 0
        if fence is not None or after is not None:
            reserve = len(fence or after or _FENCE) + 1 + close_cost
        pieces = _pieces(line, limit - reserve)
        for index, piece in enumerate(pieces):
            open_after = after if index == len(pieces) - 1 else fence
            cost = size + 1 + len(piece) + (close_cost if open_after is not None else 0)
            if cost > limit and not fresh:
                flush()
            current.append(piece)
            size += 1 + len(piece)
            fresh = fresh and not piece.strip()
        fence = after
    flush()
    return [chunk for chunk in chunks if chunk.strip()]


def render_reply(reply: Reply, *, limit: int = MESSAGE_LIMIT) -> list[Chunk]:
    """A reply as Discord messages: its text (and sources) split to fit, buttons on the last.

    Args:
        reply: what the engine decided to say.
        limit: the most characters per message.

    Returns:
        One chunk or more, in the order to send them.
    """
    text = reply.text.strip()
    if reply.kind is ReplyKind.ANSWER:
        sources = format_sources(reply.sources)
        if sources:
            text = f"{text}\n\n{sources}"
    parts = split_message(text, limit) or ["…"]
    buttons = buttons_for(reply)
    chunks = [Chunk(part) for part in parts[:-1]]
    chunks.append(Chunk(parts[-1], buttons))
    return chunks


# Handoff card ----------------------------------------------------------------------------------

#: The card's footer names the conversation, so agents' replies find it even after a restart.
FOOTER_PREFIX = "conversation "
CARD_COLOR = 0xF0B232
_EMBED_TOTAL = 6000
_FIELD_VALUE = 1024


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _transcript(turns: Sequence[Turn], limit: int) -> str:
    """The newest turns that fit in `limit` characters, oldest first."""
    names = {Role.USER: "Customer", Role.BOT: "Bot", Role.AGENT: "Agent"}
    lines: list[str] = []
    used = 0
    for turn in reversed(turns):
        line = f"**{names[turn.role]}:** {_clip(_WHITESPACE.sub(' ', turn.text), 300)}"
        if used + len(line) + 1 > limit:
            break
        lines.append(line)
        used += len(line) + 1
    if len(lines) < len(turns):
        lines.append("…")
    return "\n".join(reversed(lines))


def _embed_size(embed: EmbedPayload) -> int:
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += len(embed.get("footer", {"text": ""})["text"])
    size += len(embed.get("author", {"name": ""})["name"])
    for item in embed.get("fields", []):
        size += len(item["name"]) + len(item["value"])
    return size


def handoff_embed(card: HandoffCard) -> EmbedPayload:
    """The embed posted in the agents' channel, within every Discord embed limit.

    Agents reply in the thread started from the card; the footer names the conversation.
    """
    fields: list[EmbedFieldPayload] = [
        {"name": "Customer", "value": _clip(card.customer or "unknown", 256), "inline": True},
        {"name": "Platform", "value": _clip(card.platform, 64), "inline": True},
    ]
    if card.attempts:
        tried = "\n".join(f"• {_clip(_WHITESPACE.sub(' ', a), 400)}" for a in card.attempts[-3:])
        fields.append({"name": "What the bot tried", "value": _clip(tried, _FIELD_VALUE)})
    sources = format_sources(card.sources).removeprefix("-# ")
    if sources:
        fields.append({"name": "Sources", "value": _clip(sources, _FIELD_VALUE)})
    if card.transcript:
        fields.append(
            {"name": "Transcript", "value": _transcript(card.transcript, _FIELD_VALUE - 2)}
        )
    embed: EmbedPayload = {
        "type": "rich",
        "title": _clip(f"{card.customer or 'A customer'} would like to talk to a person", 256),
        "description": "> " + _clip(_WHITESPACE.sub(" ", card.question), 1500),
        "color": CARD_COLOR,
        "fields": fields,
        "footer": {"text": _clip(FOOTER_PREFIX + str(card.conversation), 2048)},
    }
    if card.link:
        embed["url"] = card.link
    while _embed_size(embed) > _EMBED_TOTAL and len(fields) > 2:
        fields.pop()
    return embed


def conversation_from_footer(text: str) -> ConversationKey | None:
    """The conversation a handoff card's footer names, or None if it is not one of ours."""
    if not text.startswith(FOOTER_PREFIX):
        return None
    try:
        return ConversationKey.parse(text.removeprefix(FOOTER_PREFIX))
    except ValueError:
        return None
