"""The inbox and the reply outbox through the `Store`, on SQLite and PostgreSQL.

Claims are conditional UPDATEs: of several claimers exactly one gets a row, a row held by a
live claim is not taken, an expired hold is taken again, and a sent reply is never claimed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bot.model import ConversationKey, Reply, Role
from bot.outbox import Destination
from bot.storage.store import Store

T = TypeVar("T")
THREADS = 6
KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")
WHERE = {"platform": "slack", "workspace": "T1", "channel": "C1", "thread": "1.0"}


def _all_at_once(fn: Callable[[], T], n: int = THREADS) -> list[T]:
    barrier = threading.Barrier(n)

    def run() -> T:
        barrier.wait(timeout=30)
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return [future.result(timeout=120) for future in [pool.submit(run) for _ in range(n)]]


def _pending_reply(store: Store, text: str, *, hold_s: float) -> str:
    conversation = store.get_or_create_conversation(KEY, "U1")
    row = store.add_message(conversation.id, Role.USER, "U1", "question " + text)
    return store.add_reply(
        conversation.id, row, Reply.answer(text, ()), destination=WHERE, hold_s=hold_s
    )


# Inbox -------------------------------------------------------------------------------------------


def test_accept_inbound_deduplicates_and_records(store: Store) -> None:
    payload = {"message": {"text": "hi"}, "extra": {"route": "answer"}}
    assert store.accept_inbound("slack", "event:Ev1", payload, hold_s=30) is True
    assert store.accept_inbound("slack", "event:Ev1", payload, hold_s=30) is False
    assert store.accept_inbound("discord", "event:Ev1", payload, hold_s=30) is True
    # The same key as the old claim: a delivery claimed either way is a repeat.
    assert store.has_event("slack", "event:Ev1")
    assert store.claim_event("slack", "event:Ev1") is False
    assert store.inbox_status("slack", "event:Ev1") == "pending"
    counts = store.counts()
    assert counts["inbox"] == 2 and counts["processed_event"] == 2


def test_accept_inbound_concurrently_exactly_one_wins(store: Store) -> None:
    results = _all_at_once(lambda: store.accept_inbound("slack", "event:race", {}, hold_s=30))
    assert sorted(results) == [False] * (THREADS - 1) + [True]
    assert store.counts()["inbox"] == 1


def test_held_inbox_rows_are_not_claimed_until_the_hold_expires(store: Store) -> None:
    store.accept_inbound("slack", "event:held", {"n": 1}, hold_s=60)
    store.accept_inbound("slack", "event:expired", {"n": 2}, hold_s=-1)
    claims = store.claim_inbound(("slack",), hold_s=60)
    assert [(c.dedupe_key, c.payload, c.attempts) for c in claims] == [
        ("event:expired", {"n": 2}, 1)
    ]
    # Now held by that claim: nobody else gets it, nor another platform's sweeper.
    assert store.claim_inbound(("slack",), hold_s=60) == []
    assert store.claim_inbound(("discord",), hold_s=60) == []


def test_an_expired_claim_is_claimed_again_and_done_rows_never(store: Store) -> None:
    store.accept_inbound("slack", "event:a", {}, hold_s=-1)
    store.accept_inbound("slack", "event:b", {}, hold_s=-1)
    first = store.claim_inbound(("slack",), hold_s=-1)  # a claimer that died at once
    assert [c.attempts for c in first] == [1, 1]
    assert store.inbox_done("slack", ["event:b"]) == 1
    assert store.inbox_done("slack", ["event:b"]) == 0
    again = store.claim_inbound(("slack",), hold_s=60)
    assert [(c.dedupe_key, c.attempts) for c in again] == [("event:a", 2)]
    assert store.inbox_status("slack", "event:b") == "done"
    store.give_up_inbound(again[0].id)
    assert store.inbox_status("slack", "event:a") == "failed"
    assert store.claim_inbound(("slack",), hold_s=-1) == []


def test_concurrent_inbox_claimers_never_share_a_row(store: Store) -> None:
    for n in range(12):
        store.accept_inbound("slack", f"event:{n}", {}, hold_s=-1)
    results = _all_at_once(lambda: store.claim_inbound(("slack",), hold_s=60, limit=12))
    keys = Counter(claim.dedupe_key for batch in results for claim in batch)
    assert keys == Counter(f"event:{n}" for n in range(12))


# Reply outbox ------------------------------------------------------------------------------------


def test_a_reply_with_a_destination_is_pending_until_sent(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    plain = store.add_reply(conversation.id, None, Reply.smalltalk("no destination"))
    assert store.reply_delivery(plain) == ("sent", 0)  # never swept

    reply_id = _pending_reply(store, "Like this.", hold_s=60)
    assert store.reply_delivery(reply_id) == ("pending", 0)
    assert store.claim_replies(("slack",), hold_s=60) == []  # held by the process that stored it
    store.set_reply_platform_ref(reply_id, "C1:1700000001.000200")
    assert store.reply_delivery(reply_id) == ("sent", 0)
    info = store.get_reply(reply_id)
    assert info is not None and info.platform_ref == "C1:1700000001.000200"


def test_expired_replies_are_claimed_with_their_destination(store: Store) -> None:
    reply_id = _pending_reply(store, "Like this.", hold_s=-1)
    assert store.claim_replies(("discord",), hold_s=60) == []  # another platform's sweeper
    (item,) = store.claim_replies(("slack",), hold_s=60)
    assert item.reply.id == reply_id and item.reply.text == "Like this."
    assert item.destination == WHERE and item.attempts == 1
    assert Destination.from_json(item.destination).channel == "C1"
    assert store.claim_replies(("slack",), hold_s=60) == []  # held now


def test_a_sent_reply_is_never_claimed_again(store: Store) -> None:
    reply_id = _pending_reply(store, "Like this.", hold_s=-1)
    assert len(store.claim_replies(("slack",), hold_s=-1)) == 1  # the claimer dies at once...
    store.set_reply_platform_ref(reply_id, "C1:1.2")  # ... after the live path recorded it
    assert store.claim_replies(("slack",), hold_s=60) == []
    assert store.reply_delivery(reply_id) == ("sent", 1)


def test_an_expired_reply_claim_is_taken_again_then_given_up(store: Store) -> None:
    reply_id = _pending_reply(store, "Like this.", hold_s=-1)
    assert [i.attempts for i in store.claim_replies(("slack",), hold_s=-1)] == [1]
    assert [i.attempts for i in store.claim_replies(("slack",), hold_s=-1)] == [2]
    store.give_up_reply(reply_id)
    assert store.reply_delivery(reply_id) == ("failed", 2)
    assert store.claim_replies(("slack",), hold_s=-1) == []


def test_concurrent_reply_claimers_never_share_a_reply(store: Store) -> None:
    ids = {_pending_reply(store, f"answer {n}", hold_s=-1) for n in range(12)}
    results = _all_at_once(lambda: store.claim_replies(("slack",), hold_s=60, limit=12))
    claimed = Counter(item.reply.id for batch in results for item in batch)
    assert set(claimed) == ids and set(claimed.values()) == {1}


# Redelivery helpers ------------------------------------------------------------------------------


def test_reply_for_message_and_turn_covered(store: Store) -> None:
    conversation = store.get_or_create_conversation(KEY, "U1")
    first = store.add_message(conversation.id, Role.USER, "U1", "one", "m1")
    second = store.add_message(conversation.id, Role.USER, "U1", "two", "m2")
    assert store.message_row(conversation.id, "m2") == second
    assert store.message_row(conversation.id, "m9") is None
    assert not store.turn_covered(conversation.id, first)
    reply_id = store.add_reply(conversation.id, second, Reply.answer("both", ()))
    # A burst's reply answers its last message and covers the earlier ones.
    assert store.turn_covered(conversation.id, first)
    assert store.turn_covered(conversation.id, second)
    found = store.reply_for_message(KEY, "m2")
    assert found is not None and found.id == reply_id
    assert store.reply_for_message(KEY, "m1") is None
    assert store.reply_for_message(ConversationKey("slack", "T1", "C2"), "m2") is None
