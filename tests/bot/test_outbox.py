"""`bot.outbox`: the JSON forms kept in the tables, and the sweeper's bookkeeping.

Senders and inbox handlers here are small recording objects implementing the protocols; the
real ones (Slack against its emulator) are tested in tests/adapters/slack/test_outbox.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.model import Action, ActionKind, ConversationKey, InboundMessage, Reply, ReplyKind, Source
from bot.outbox import (
    Destination,
    Sweeper,
    inbound_from_json,
    inbound_to_json,
    reply_from_stored,
)
from bot.storage.store import Store

KEY = ConversationKey("slack", "T1", "C1", "1.0")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    built = Store.from_url(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        yield built
    finally:
        built.close()


def _message(**changes: Any) -> InboundMessage:
    fields: dict[str, Any] = {
        "platform": "slack",
        "workspace": "T1",
        "channel": "C1",
        "thread": "1.0",
        "user": "U1",
        "message_id": "C1:1.5",
        "text": "héllo 👋",
        "sent_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "raw": {"event": {"ts": "1.5", "blocks": [{"type": "rich_text"}]}},
    }
    return InboundMessage(**(fields | changes))


def test_inbound_messages_survive_the_inbox() -> None:
    message = _message(revision="1.6", addressed=False)
    again = inbound_from_json(inbound_to_json(message))
    assert again == message
    assert again.raw == message.raw and again.sent_at == message.sent_at
    with pytest.raises(ValueError, match="not an inbound message"):
        inbound_from_json({"platform": "slack"})


def test_destinations_keep_the_buttons() -> None:
    reply = Reply.clarify("Which one?", (Source("a", 0.5, "A"), Source("b", 0.4, "B")))
    destination = Destination.of(_message(), reply)
    assert destination.thread == "1.0" and destination.message_id == "C1:1.5"
    again = Destination.from_json(destination.to_json())
    assert again == destination
    assert again.actions == (
        Action(ActionKind.CHOOSE, "A", "a"),
        Action(ActionKind.CHOOSE, "B", "b"),
    )
    with pytest.raises(ValueError, match="not a reply destination"):
        Destination.from_json({"channel": "C1"})


def test_stored_replies_come_back_with_their_kinds_buttons(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    sources = (Source("reset", 0.9, "Reset", "https://x/reset"),)
    answer_id = store.add_reply(conversation.id, None, Reply.answer("Do this.", sources, 0.9))
    info = store.get_reply(answer_id)
    assert info is not None
    again = reply_from_stored(info)
    assert again == replace(Reply.answer("Do this.", sources, 0.9), id=answer_id)
    assert again.kind is ReplyKind.ANSWER and again.actions
    plain = reply_from_stored(info, Destination("slack", "T1", "C1"))
    assert plain.actions == ()  # the destination's (none) win


class Recorder:
    """A sender and inbox handler for platform "test" that records, or fails when told."""

    platform = "test"

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, Destination]] = []
        self.redelivered: list[InboundMessage] = []

    async def resend(self, reply: Reply, destination: Destination) -> str:
        if self.fail:
            raise RuntimeError("the platform is down")
        self.sent.append((reply.id, destination))
        return f"ref:{reply.id}"

    async def redeliver(self, message: InboundMessage, extra: Mapping[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the turn failed")
        self.redelivered.append(message)


def _pending(store: Store, text: str) -> str:
    conversation = store.get_or_create_conversation(ConversationKey("test", "", "c"), "u")
    destination = Destination("test", "", "c").to_json()
    reply = Reply.smalltalk(text)
    return store.add_reply(conversation.id, None, reply, destination=destination, hold_s=-1)


async def test_the_sweeper_sends_and_records_once(store: Store) -> None:
    reply_id = _pending(store, "hi")
    recorder = Recorder()
    sweeper = Sweeper(store, hold_s=30)
    sweeper.add_sender(recorder)

    counts = await sweeper.sweep()
    assert (counts.resent, counts.failed) == (1, 0)
    assert [sent[0] for sent in recorder.sent] == [reply_id]
    info = store.get_reply(reply_id)
    assert info is not None and info.platform_ref == f"ref:{reply_id}"
    assert not await sweeper.sweep()
    assert len(recorder.sent) == 1


async def test_failed_sends_are_retried_then_given_up(store: Store) -> None:
    reply_id = _pending(store, "hi")
    sweeper = Sweeper(store, hold_s=-1, max_attempts=2)  # every claim expires at once
    sweeper.add_sender(Recorder(fail=True))
    assert (await sweeper.sweep()).failed == 1
    assert (await sweeper.sweep()).failed == 1
    assert (await sweeper.sweep()).given_up == 1
    assert store.reply_delivery(reply_id) == ("failed", 3)
    assert not await sweeper.sweep()


async def test_the_sweeper_redelivers_abandoned_messages(store: Store) -> None:
    message = _message(platform="test")
    payload = {"message": inbound_to_json(message), "extra": {}}
    store.accept_inbound("test", "event:1", payload, hold_s=-1)
    store.accept_inbound("test", "event:2", {"message": {"broken": True}}, hold_s=-1)
    recorder = Recorder()
    sweeper = Sweeper(store, hold_s=30)
    sweeper.add_inbox(recorder)

    counts = await sweeper.sweep()
    assert (counts.redelivered, counts.given_up) == (1, 1)
    assert recorder.redelivered == [message]
    assert store.inbox_status("test", "event:1") == "done"
    assert store.inbox_status("test", "event:2") == "failed"
    assert not await sweeper.sweep()
