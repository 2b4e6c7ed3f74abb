"""The relay tables (`relay_link`, `relay_outbox`) through the `Store`, on both backends."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from bot.model import ConversationKey, Owner, utcnow
from bot.storage.store import Store
from bot.storage.tables import Handoff

KEY = ConversationKey("slack", "T1", "D1", "")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _conversation(store: Store) -> str:
    return store.get_or_create_conversation(KEY, "U1").id


def _enqueue(store: Store, conversation_id: str, origin: str, text: str = "hi") -> bool:
    return store.enqueue_relay(
        conversation_id,
        direction="to_customer",
        target_platform="slack",
        target_ref=str(KEY),
        text=text,
        author="A1",
        origin_key=origin,
    )


def test_link_lifecycle(store: Store) -> None:
    conversation_id = _conversation(store)
    assert store.relay_link(conversation_id) is None
    store.open_relay_link(conversation_id, "slack", {"question": "q"}, NOW)
    link = store.relay_link(conversation_id)
    assert link is not None
    assert (link.desk, link.state, link.card_ref, link.request) == (
        "slack",
        "waiting",
        None,
        {"question": "q"},
    )
    assert link.deadline == NOW
    assert [x.conversation_id for x in store.relay_links_to_open("slack")] == [conversation_id]
    assert store.relay_links_to_open("zendesk") == []

    assert store.set_relay_card(conversation_id, "opening:x", expect=None)
    assert not store.set_relay_card(conversation_id, "opening:y", expect=None)
    assert store.set_relay_card(conversation_id, "C1:1.1", expect="opening:x")
    assert store.relay_links_to_open("slack") == []
    found = store.relay_link_by_card("C1:1.1")
    assert found is not None and found.conversation_id == conversation_id

    assert [x.conversation_id for x in store.expired_relay_links(NOW)] == [conversation_id]
    assert store.expired_relay_links(NOW - timedelta(seconds=1)) == []
    assert store.set_relay_state(
        conversation_id, "claimed", from_states=("waiting",), claimed_by="A1", claimed_at=NOW
    )
    assert not store.set_relay_state(conversation_id, "claimed", from_states=("waiting",))
    link = store.relay_link(conversation_id)
    assert link is not None and (link.state, link.claimed_by, link.claimed_at) == (
        "claimed",
        "A1",
        NOW,
    )
    assert store.expired_relay_links(NOW + timedelta(days=1)) == []

    # Handed over again: a fresh link.
    store.open_relay_link(conversation_id, "zendesk", {}, NOW)
    link = store.relay_link(conversation_id)
    assert link is not None and (link.desk, link.state, link.card_ref, link.claimed_by) == (
        "zendesk",
        "waiting",
        None,
        None,
    )


def test_outbox_deduplicates_and_claims_once(store: Store) -> None:
    conversation_id = _conversation(store)
    assert _enqueue(store, conversation_id, "agent:1", "first")
    assert not _enqueue(store, conversation_id, "agent:1", "first again")
    assert _enqueue(store, conversation_id, "agent:2", "second")
    pending = store.pending_relay("slack")
    assert [item.text for item in pending] == ["first", "second"]
    assert store.pending_relay("discord") == []

    first = pending[0].id
    assert store.claim_relay_delivery(first) is False  # claimed for the first time
    assert store.claim_relay_delivery(first) is None  # taken already
    assert [item.text for item in store.pending_relay("slack")] == ["second"]
    store.relay_delivery_failed(
        first, now=utcnow(), first_delay_s=0.0, max_delay_s=0.0, give_up_after_s=3600.0
    )
    assert [item.text for item in store.pending_relay("slack")] == ["first", "second"]

    assert store.claim_relay_delivery(first) is True  # claimed before: the post failed
    items = store.relay_outbox(conversation_id)
    assert [(item.status, item.claimed_at is not None) for item in items] == [
        ("posting", True),
        ("pending", False),
    ]
    store.mark_relay_sent(first)  # posted
    items = store.relay_outbox(conversation_id)
    assert [(item.status, item.sent_at is not None) for item in items] == [
        ("sent", True),
        ("pending", False),
    ]


def test_concurrent_claims_deliver_once(store: Store) -> None:
    conversation_id = _conversation(store)
    _enqueue(store, conversation_id, "agent:1")
    item = store.pending_relay("slack")[0]
    barrier = threading.Barrier(8)

    def claim() -> bool:
        barrier.wait(timeout=10)
        return store.claim_relay_delivery(item.id) is not None

    with ThreadPoolExecutor(8) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(claim) for _ in range(8)]]
    assert results.count(True) == 1


def test_events_and_recorded_claims(store: Store) -> None:
    conversation_id = _conversation(store)
    assert not store.has_event("slack", "relay-post:1")
    store.claim_event("slack", "relay-post:1")
    assert store.has_event("slack", "relay-post:1")
    store.record_handoff(conversation_id, Owner.HUMAN, Owner.HUMAN, actor="A1", reason="claimed")
    with Session(store.engine) as session:
        rows = session.exec(select(Handoff)).all()
    assert [(r.actor, r.reason, r.to_owner) for r in rows] == [("A1", "claimed", "human")]
