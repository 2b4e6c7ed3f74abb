"""The console adapter's conversions, against a fake engine (the engine has its own tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from adapters.console.chat import run_console
from adapters.console.relay import ConsoleCustomerChannel
from bot.handoff import HandoffRequest
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    FeedbackValue,
    InboundMessage,
    Owner,
    Reply,
    Source,
)
from bot.relay import Relay, RelayConfig
from bot.storage.store import Store


class FakeEngine:
    """Answers each message with the next canned batch of replies and records every call."""

    def __init__(self, *batches: list[Reply], recorded: bool = True) -> None:
        self.batches = list(batches)
        self.messages: list[InboundMessage] = []
        self.feedback: list[FeedbackEvent] = []
        self.recorded = recorded
        self.handoff_sink = None  # no relay: nothing is printed in the background
        self.posted: dict[str, str] = {}

    def attach_platform_ref(self, reply_id: str, ref: str) -> None:
        self.posted[reply_id] = ref

    def handle(self, message: InboundMessage) -> list[Reply]:
        self.messages.append(message)
        return self.batches.pop(0) if self.batches else []

    def record_feedback(self, event: FeedbackEvent) -> bool:
        self.feedback.append(event)
        return self.recorded


def scripted(lines: Iterable[str], end: BaseException | None = None) -> Callable[[str], str]:
    """An input function that returns `lines` one by one, then raises `end` (EOF by default)."""
    pending = list(lines)
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        if pending:
            return pending.pop(0)
        raise end if end is not None else EOFError

    read.prompts = prompts  # type: ignore[attr-defined]
    return read


def chat(engine: FakeEngine, lines: Iterable[str], **kwargs: object) -> str:
    console = Console(record=True, width=100)
    run_console(engine, console=console, input_fn=scripted(lines), **kwargs)  # type: ignore[arg-type]
    return console.export_text()


ANSWER = replace(
    Reply.answer(
        "To export, open **Settings** and choose `Export`.",
        (Source("kb-1", 0.91, "Exporting notes", "https://help.example/export"),),
        0.91,
    ),
    id="r-1",
)
CLARIFY = replace(
    Reply.clarify(
        "I want to be sure I answer the right question. Which of these do you mean?\n"
        "• Reset your password\n"
        "• Change your email",
        (Source("kb-2", 0.6, "Reset your password"), Source("kb-3", 0.5, "Change your email")),
        0.55,
    ),
    id="r-2",
)


def test_answer_is_printed_with_its_sources() -> None:
    engine = FakeEngine([ANSWER])

    output = chat(engine, ["how do I export?"], user="ana")

    assert "Lumen Assistant" in output
    assert "To export, open Settings and choose Export." in output
    assert "Source: Exporting notes (https://help.example/export)" in output
    assert "Goodbye" in output
    [message] = engine.messages
    assert message.platform == "console"
    assert message.workspace == ""
    assert message.user == "ana"
    assert message.text == "how do I export?"
    assert message.channel
    assert message.message_id


def test_each_message_gets_a_fresh_id_in_the_same_conversation() -> None:
    engine = FakeEngine([ANSWER], [ANSWER])

    chat(engine, ["one", "two"])

    first, second = engine.messages
    assert first.channel == second.channel
    assert first.message_id != second.message_id


def test_clarify_options_are_numbered_and_chosen_by_number() -> None:
    engine = FakeEngine([CLARIFY], [ANSWER])

    output = chat(engine, ["password", "2"])

    assert "1. Reset your password" in output
    assert "2. Change your email" in output
    assert [m.text for m in engine.messages] == ["password", "Change your email"]


def test_a_number_out_of_range_is_not_sent() -> None:
    engine = FakeEngine([CLARIFY])

    output = chat(engine, ["password", "7"])

    assert "Choose a number from 1 to 2" in output
    assert [m.text for m in engine.messages] == ["password"]


def test_a_number_without_options_is_sent_as_text() -> None:
    engine = FakeEngine([ANSWER], [ANSWER])

    chat(engine, ["hi", "2"])

    assert [m.text for m in engine.messages] == ["hi", "2"]


@pytest.mark.parametrize(
    ("command", "value"), [("/up", FeedbackValue.UP), ("/down", FeedbackValue.DOWN)]
)
def test_rating_records_feedback_for_the_last_reply(command: str, value: FeedbackValue) -> None:
    other = replace(ANSWER, id="r-9")
    engine = FakeEngine([ANSWER], [other])

    output = chat(engine, ["first", "second", command], user="ana")

    [event] = engine.feedback
    assert event.reply_id == "r-9"
    assert event.value is value
    assert event.platform == "console"
    assert event.user == "ana"
    assert event.event_id
    assert "Thanks for the feedback" in output


def test_rating_before_any_answer_records_nothing() -> None:
    engine = FakeEngine()

    output = chat(engine, ["/up"])

    assert engine.feedback == []
    assert "no answer to rate" in output


def test_new_starts_a_new_conversation() -> None:
    engine = FakeEngine([ANSWER], [ANSWER])

    output = chat(engine, ["one", "/new", "two", "/up"])

    first, second = engine.messages
    assert first.channel != second.channel
    assert "new conversation" in output
    assert [e.reply_id for e in engine.feedback] == ["r-1"]


def test_new_forgets_the_last_reply() -> None:
    engine = FakeEngine([ANSWER])

    chat(engine, ["one", "/new", "/down"])

    assert engine.feedback == []


def test_empty_input_is_ignored() -> None:
    engine = FakeEngine([ANSWER])

    chat(engine, ["", "   ", "hello", ""])

    assert [m.text for m in engine.messages] == ["hello"]


@pytest.mark.parametrize("command", ["/quit", "/exit", "/QUIT"])
def test_quit_commands_end_the_chat(command: str) -> None:
    engine = FakeEngine([ANSWER])
    read = scripted([command, "never sent"])
    console = Console(record=True, width=100)

    run_console(engine, console=console, input_fn=read)  # type: ignore[arg-type]

    assert engine.messages == []
    assert read.prompts == ["you> "]  # type: ignore[attr-defined]
    assert "Goodbye" in console.export_text()


@pytest.mark.parametrize("end", [EOFError(), KeyboardInterrupt()])
def test_end_of_input_and_interrupt_end_cleanly(end: BaseException) -> None:
    engine = FakeEngine([ANSWER])
    console = Console(record=True, width=100)

    run_console(engine, console=console, input_fn=scripted(["hello"], end))  # type: ignore[arg-type]

    assert [m.text for m in engine.messages] == ["hello"]
    assert "Goodbye" in console.export_text()


def test_bullets_and_line_breaks_survive_markdown() -> None:
    reply = replace(Reply.smalltalk("Here you go:\nfirst line\n• alpha\n• beta\nafter"), id="r-3")
    engine = FakeEngine([reply])

    output = chat(engine, ["list"])

    lines = [line.strip() for line in output.splitlines()]
    assert "Here you go:" in lines
    assert "first line" in lines
    assert "• alpha" in lines
    assert "• beta" in lines
    assert "after" in lines


def test_fallback_mentions_how_to_reach_a_person() -> None:
    engine = FakeEngine([replace(Reply.fallback("Sorry, I don't know."), id="r-4")])

    output = chat(engine, ["??"])

    assert "Sorry, I don't know." in output
    assert "I'd like to talk to a person" in output


# Agents' replies while the prompt waits (the handoff relay) ------------------------------------


def test_agents_replies_are_printed_while_waiting(tmp_path: Path) -> None:
    """A real relay on a SQLite store; the desk's process (elsewhere) has opened the card."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'console.db'}")
    try:
        relay = Relay(store, RelayConfig(desk="slack", poll_s=0.02))
        key = ConversationKey("console", "", "session-1")
        conversation = store.get_or_create_conversation(key, "you")
        store.set_owner(conversation.id, Owner.HUMAN, actor="bot", reason="customer_request")
        relay.request(HandoffRequest(conversation.id, key, "you", "console", "refund", "x"))
        assert store.set_relay_card(conversation.id, "card-1", expect=None)
        relay.agent_said("card-1", "Ana", "Hi, I'm Ana. I'm on it.", "a1")

        engine = FakeEngine()
        engine.handoff_sink = relay  # type: ignore[assignment]
        console = Console(record=True, width=100)
        deadline = time.monotonic() + 10

        def wait_for_agent(prompt: str) -> str:
            while "I'm on it." not in console.export_text(clear=False):
                if time.monotonic() > deadline:
                    raise TimeoutError("the agent's reply was not printed")
                time.sleep(0.02)
            return "/quit"

        run_console(engine, console=console, input_fn=wait_for_agent)  # type: ignore[arg-type]
        out = console.export_text()
        assert "Lumen Assistant:\n" + relay.config.claimed_text in out
        assert "Ana (support team):\nHi, I'm Ana. I'm on it." in out
        assert out.rstrip().endswith("Goodbye!")
        statuses = {(i.direction, i.status) for i in store.relay_outbox(conversation.id)}
        # Delivered to the customer; the note for the card waits for the desk's process.
        assert statuses == {("to_customer", "sent"), ("to_agent", "pending")}
    finally:
        store.close()


def test_the_console_channel_refuses_other_platforms() -> None:
    channel = ConsoleCustomerChannel(Console(record=True))
    with pytest.raises(ValueError, match="slack"):
        asyncio.run(channel.post(ConversationKey("slack", "T", "C", ""), "hi", post_id="relay-1"))


def test_printed_replies_are_recorded_as_posted() -> None:
    engine = FakeEngine([ANSWER])
    chat(engine, ["How do I export?"])
    [(reply_id, ref)] = engine.posted.items()
    assert reply_id == "r-1" and ref.startswith("console:") and ref.endswith(":r-1")
