"""`Store.open_turn`: a turn's claims, conversation, history and messages in one transaction.

Run on SQLite and on real PostgreSQL (see conftest). It must do what `claim_event`,
`get_or_create_conversation`, `answered_message`, `recent_turns` and `add_message` do one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import event

from bot.model import ConversationKey, Owner, Reply, ReplyKind, Role, Source, Turn
from bot.storage.store import Store, TurnMessage

T = TypeVar("T")

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")
THREADS = 8


def _message(n: int, text: str = "how do I reset?", *, edit: bool = False) -> TurnMessage:
    event_id = f"message:T1:m{n}" + (":2" if edit else "")
    return TurnMessage(event_id, f"m{n}", "U1", text, edit=edit)


def _all_at_once(fn: Callable[[], T], n: int = THREADS) -> list[T]:
    barrier = threading.Barrier(n)

    def run() -> T:
        barrier.wait(timeout=10)
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return [future.result(timeout=60) for future in [pool.submit(run) for _ in range(n)]]


def test_a_new_conversation_is_created_and_the_messages_stored(store: Store) -> None:
    opening = store.open_turn("slack", KEY, "U1", [_message(1), _message(2, "and on mobile?")], 40)

    assert opening.status == ("recorded", "recorded")
    assert opening.history == []
    assert opening.conversation is not None
    assert opening.conversation.key == KEY
    assert opening.conversation.owner is Owner.BOT
    assert opening.conversation.customer == "U1"
    assert len(opening.rows) == 2 and opening.rows[0] < opening.rows[1]
    assert store.history(opening.conversation.id) == [
        Turn(Role.USER, "how do I reset?"),
        Turn(Role.USER, "and on mobile?"),
    ]
    # The events are claimed as `claim_event` claims them.
    assert store.has_event("slack", "message:T1:m1")
    assert not store.claim_event("slack", "message:T1:m2")


def test_the_history_is_what_recent_turns_reads(store: Store) -> None:
    first = store.open_turn("slack", KEY, "U1", [_message(1)], 40)
    assert first.conversation is not None
    source = Source("reset-password", 0.9, "Reset", None)
    store.add_reply(first.conversation.id, first.rows[0], Reply.answer("Like this.", (source,)))

    second = store.open_turn("slack", KEY, "U2", [_message(2, "thanks")], 40)

    assert second.conversation == first.conversation  # the first customer stays
    assert second.history == store.recent_turns(first.conversation.id, 40)[:2]
    assert [t.role for t in second.history] == [Role.USER, Role.BOT]
    assert second.history[1].reply_kind is ReplyKind.ANSWER
    assert second.history[1].sources == (source,)
    limited = store.open_turn("slack", KEY, "U1", [_message(3)], 1)
    assert [t.text for t in limited.history] == ["thanks"]


def test_repeated_deliveries_are_skipped(store: Store) -> None:
    store.open_turn("slack", KEY, "U1", [_message(1)], 40)

    again = store.open_turn("slack", KEY, "U1", [_message(1)], 40)
    assert again.status == ("duplicate",)
    assert again.conversation is None
    assert again.rows == ()

    mixed = store.open_turn("slack", KEY, "U1", [_message(1), _message(2)], 40)
    assert mixed.status == ("duplicate", "recorded")
    assert len(mixed.rows) == 1
    assert store.counts()["message"] == 2


def test_an_edit_of_an_answered_message_is_not_recorded(store: Store) -> None:
    opening = store.open_turn("slack", KEY, "U1", [_message(1), _message(2)], 40)
    assert opening.conversation is not None
    store.add_reply(opening.conversation.id, opening.rows[0], Reply.answer("Like this.", ()))

    edits = store.open_turn(
        "slack", KEY, "U1", [_message(1, "fixed", edit=True), _message(2, "also", edit=True)], 40
    )

    assert edits.status == ("answered", "recorded")  # m2 got no reply of its own
    assert len(edits.rows) == 1
    assert store.history(opening.conversation.id)[-1] == Turn(Role.USER, "also")


def test_one_of_many_concurrent_deliveries_records_the_message(store: Store) -> None:
    results = _all_at_once(lambda: store.open_turn("slack", KEY, "U1", [_message(1)], 40))

    assert sorted(r.status for r in results) == [("duplicate",)] * (THREADS - 1) + [("recorded",)]
    assert store.counts()["message"] == 1
    assert store.counts()["conversation"] == 1


def test_different_messages_at_once_share_one_new_conversation(store: Store) -> None:
    counter = iter(range(THREADS))
    lock = threading.Lock()

    def open_one() -> str | None:
        with lock:
            n = next(counter)
        opening = store.open_turn("slack", KEY, "U1", [_message(n)], 40)
        return None if opening.conversation is None else opening.conversation.id

    ids = _all_at_once(open_one)

    assert None not in ids and len(set(ids)) == 1
    assert store.counts()["conversation"] == 1
    assert store.counts()["message"] == THREADS


def test_a_turn_is_one_transaction(store: Store) -> None:
    store.open_turn("slack", KEY, "U1", [_message(1)], 40)
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(store.engine, "commit", count)
    try:
        store.open_turn("slack", KEY, "U1", [_message(2), _message(3)], 40)
    finally:
        event.remove(store.engine, "commit", count)
    assert len(commits) == 1


def test_a_redelivery_answers_what_a_dead_turn_left_and_skips_what_it_finished(
    store: Store,
) -> None:
    """A turn stored its messages and died before replying: the redelivery reuses their rows
    and reads the history from before them; once a reply covers them, they are "handled"."""
    first = store.open_turn("slack", KEY, "U1", [_message(1, "hello")], 40)
    assert first.conversation is not None
    store.add_reply(first.conversation.id, first.rows[0], Reply.smalltalk("Hi!"))
    died = store.open_turn("slack", KEY, "U1", [_message(2), _message(3, "on mobile")], 40)

    plain = store.open_turn("slack", KEY, "U1", [_message(2), _message(3, "on mobile")], 40)
    assert plain.status == ("duplicate", "duplicate")

    again = store.open_turn(
        "slack", KEY, "U1", [_message(2), _message(3, "on mobile")], 40, redelivered=True
    )
    assert again.status == ("recorded", "recorded")
    assert again.rows == died.rows, "stored once, not twice"
    assert [turn.text for turn in again.history] == ["hello", "Hi!"]
    assert [t.text for t in store.history(died.conversation.id)].count("on mobile") == 1  # type: ignore[union-attr]

    store.add_reply(first.conversation.id, died.rows[-1], Reply.smalltalk("Settings > Reset."))
    finished = store.open_turn(
        "slack", KEY, "U1", [_message(2), _message(3, "on mobile")], 40, redelivered=True
    )
    assert finished.status == ("handled", "handled")
    assert finished.rows == ()
    # A redelivered message that was claimed but never stored is stored now.
    assert store.claim_event("slack", "message:T1:m4")
    lost = store.open_turn("slack", KEY, "U1", [_message(4)], 40, redelivered=True)
    assert lost.status == ("recorded",)
    assert len(lost.rows) == 1 and lost.rows[0] > died.rows[-1]


def test_a_kept_context_comes_back_with_the_next_turn_and_never_goes_back(store: Store) -> None:
    """`keep_context`: the vector the next message's context was embedded into comes back with
    the conversation when the next turn opens, on whichever worker; a worker that anticipated
    an earlier turn late does not overwrite it."""
    first = store.open_turn("slack", KEY, "U1", [_message(1)], 40)
    assert first.conversation is not None and first.conversation.context is None
    conversation_id, row = first.conversation.id, first.rows[-1]
    vector = bytes(range(256)) * 6  # 1,536 bytes, every byte value: stored as they are

    assert store.keep_context(conversation_id, row, "key-1", vector)
    second = store.open_turn("slack", KEY, "U1", [_message(2, "and for business?")], 40)
    assert second.conversation is not None and second.conversation.context is not None
    assert second.conversation.context.key == "key-1"
    assert second.conversation.context.vector == vector

    later = second.rows[-1]
    assert store.keep_context(conversation_id, later, "key-2", b"\x00" * 1536)
    assert not store.keep_context(conversation_id, row, "key-1", vector)  # late: refused
    assert store.keep_context(conversation_id, later, "key-3", b"\x01" * 1536)  # same turn again
    third = store.open_turn("slack", KEY, "U1", [_message(3, "thanks")], 40)
    assert third.conversation is not None and third.conversation.context is not None
    assert third.conversation.context.key == "key-3"
    assert third.conversation.context.vector == b"\x01" * 1536
    assert not store.keep_context("no-such-conversation", later, "key", vector)


def test_a_closed_store_keeps_no_context(store: Store) -> None:
    """The anticipating thread may finish after the store's owner closed it: nothing is
    written then, and no connection is opened again behind the owner's back."""
    opening = store.open_turn("slack", KEY, "U1", [_message(1)], 40)
    assert opening.conversation is not None
    store.close()
    assert not store.keep_context(opening.conversation.id, opening.rows[-1], "key", b"\x00" * 8)
    later = store.open_turn("slack", KEY, "U1", [_message(2)], 40)  # others reconnect
    assert later.conversation is not None and later.conversation.context is None
