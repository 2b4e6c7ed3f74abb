"""Chat with the engine in a terminal: one line in, the bot's replies out, rendered with rich.

With a desk configured, agents' replies to a handed-over conversation are printed as they arrive
(`adapters.console.relay`).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text

from adapters.console.relay import BOT_NAME, PLATFORM, ConsoleRelay
from bot.engine import Engine
from bot.errors import StorageError
from bot.model import (
    ActionKind,
    FeedbackEvent,
    FeedbackValue,
    InboundMessage,
    Reply,
    ReplyKind,
)
from bot.relay import Relay

__all__ = ["run_console"]

PROMPT = "you> "
HANDOFF_TEXT = "I'd like to talk to a person"
QUIT_COMMANDS = frozenset({"/quit", "/exit"})

_BULLET = re.compile(r"^\s*[•*-]\s+")


@dataclass(slots=True)
class _Session:
    """What one console session remembers between lines."""

    channel: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_reply_id: str = ""
    options: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.channel = uuid.uuid4().hex
        self.last_reply_id = ""
        self.options = []


def run_console(
    engine: Engine,
    *,
    user: str = "you",
    console: Console | None = None,
    input_fn: Callable[[str], str] = input,
) -> None:
    """Run an interactive chat with `engine` until /quit, /exit, end of input or Ctrl+C.

    When the engine hands conversations to a `Relay`, agents' replies are printed as they come.
    """
    out = console if console is not None else Console()
    session = _Session()
    _banner(out)
    relay = engine.handoff_sink
    background = ConsoleRelay(relay, out) if isinstance(relay, Relay) else None
    if background is not None:
        background.start()
    try:
        while True:
            try:
                line = input_fn(PROMPT).strip()
            except EOFError:
                break
            if not line:
                continue
            command = line.lower()
            if command in QUIT_COMMANDS:
                break
            if command == "/new":
                session.reset()
                out.print(Text("Started a new conversation.", style="dim"))
                continue
            if command in ("/up", "/down"):
                value = FeedbackValue.UP if command == "/up" else FeedbackValue.DOWN
                _rate(engine, out, session, user, value)
                continue
            text = _choice(out, session, line)
            if text is None:
                continue
            _send(engine, out, session, user, text)
    except KeyboardInterrupt:
        out.print()
    finally:
        if background is not None:
            background.stop()
    out.print(Text("Goodbye!", style="bold"))


def _banner(out: Console) -> None:
    out.print(Text(BOT_NAME, style="bold cyan"))
    out.print(
        Text(
            "Type a question and press Enter. Commands: /up or /down rate the last answer, "
            "/new starts a new conversation, /quit exits.",
            style="dim",
        )
    )


def _choice(out: Console, session: _Session, line: str) -> str | None:
    """The text to send for `line`: a numbered option's label, or the line itself."""
    if not (session.options and line.isdigit()):
        return line
    number = int(line)
    if not 1 <= number <= len(session.options):
        out.print(Text(f"Choose a number from 1 to {len(session.options)}.", style="yellow"))
        return None
    label = session.options[number - 1]
    out.print(Text(f"→ {label}", style="dim"))
    return label


def _send(engine: Engine, out: Console, session: _Session, user: str, text: str) -> None:
    message = InboundMessage(
        platform=PLATFORM,
        workspace="",
        channel=session.channel,
        user=user,
        message_id=uuid.uuid4().hex,
        text=text,
    )
    with out.status("Thinking…", spinner="dots"):
        replies = engine.handle(message)
    session.options = []
    for reply in replies:
        _print_reply(out, session, reply)
        if reply.id:
            session.last_reply_id = reply.id
            _printed(engine, session, reply.id)
    out.print()


def _printed(engine: Engine, session: _Session, reply_id: str) -> None:
    """Record a reply as posted: a handoff's card opens only once the customer has read it."""
    # On failure the relay opens the card after its reply wait instead.
    with contextlib.suppress(StorageError):
        engine.attach_platform_ref(reply_id, f"{PLATFORM}:{session.channel}:{reply_id}")


def _print_reply(out: Console, session: _Session, reply: Reply) -> None:
    choices = [a.label for a in reply.actions if a.kind is ActionKind.CHOOSE]
    text = reply.text
    if reply.kind is ReplyKind.CLARIFY and choices:
        # The numbered list below replaces the bulleted options in the text.
        labels = set(choices)
        text = "\n".join(
            line for line in text.splitlines() if _BULLET.sub("", line, count=1) not in labels
        )
    out.print(Text(f"{BOT_NAME}:", style="bold cyan"))
    out.print(Markdown(_markdown_source(text)))
    if reply.kind is ReplyKind.CLARIFY and choices:
        for number, label in enumerate(choices, start=1):
            out.print(Text(f"  {number}. {label}"))
        out.print(Text("Type a number to choose.", style="dim"))
        session.options = choices
    else:
        for source in reply.sources:
            title = source.title or source.id
            shown = f"Source: {title} ({source.url})" if source.url else f"Source: {title}"
            out.print(Text(shown, style="dim"))
    if any(a.kind is ActionKind.HANDOFF for a in reply.actions):
        out.print(Text(f'To reach a person, type "{HANDOFF_TEXT}".', style="dim"))


def _markdown_source(text: str) -> str:
    """`text` as Markdown that keeps its line breaks and renders "•" bullets as a list."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        item = _BULLET.match(line) is not None
        if item:
            line = _BULLET.sub("- ", line, count=1)
        previous = lines[-1] if lines else ""
        if previous.strip() and line:
            previous_item = previous.startswith("- ")
            if item != previous_item:
                lines.append("")  # a list starts or ends: separate it from the paragraph
            elif not item:
                lines[-1] = previous + "  "  # a hard line break inside a paragraph
        lines.append(line)
    return "\n".join(lines)


def _rate(engine: Engine, out: Console, session: _Session, user: str, value: FeedbackValue) -> None:
    if not session.last_reply_id:
        out.print(Text("There is no answer to rate yet.", style="yellow"))
        return
    event = FeedbackEvent(
        platform=PLATFORM,
        reply_id=session.last_reply_id,
        user=user,
        value=value,
        event_id=uuid.uuid4().hex,
    )
    try:
        recorded = engine.record_feedback(event)
    except StorageError as e:
        out.print(Text(f"Could not record the feedback: {e}", style="red"))
        return
    message = "Thanks for the feedback!" if recorded else "That rating was already recorded."
    out.print(Text(message, style="dim"))
