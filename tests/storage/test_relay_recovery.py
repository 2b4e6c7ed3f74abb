"""Relay card openings that a dead process left behind, delivered web messages, posted replies and
the policies' view of a conversation (`Store.recent_turns`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from bot.handoff import HandoffRequest
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    FeedbackValue,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Source,
)
from bot.relay import Relay, RelayConfig
from bot.storage.store import Store
from bot.storage.tables import RelayLink
from policies.state import HistoryTurn

KEY = ConversationKey("slack", "T1", "D1", "")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _linked(store: Store) -> str:
    conversation_id = store.get_or_create_conversation(KEY, "U1").id
    store.open_relay_link(conversation_id, "slack", {"question": "q"}, NOW + timedelta(hours=1))
    return conversation_id


def _open_ids(store: Store, stale_before: datetime | None = None) -> list[str]:
    links = store.relay_links_to_open("slack", stale_before=stale_before)
    return [link.conversation_id for link in links]


def test_an_opening_is_listed_again_once_it_is_stale(store: Store) -> None:
    conversation_id = _linked(store)
    assert store.set_relay_card(conversation_id, "opening:a", expect=None, opening_at=NOW)
    link = store.relay_link(conversation_id)
    assert link is not None and (link.card_ref, link.opening_at) == ("opening:a", NOW)

    assert _open_ids(store) == []  # without a grace: never re-taken (the old behaviour)
    assert _open_ids(store, NOW - timedelta(seconds=1)) == []  # still fresh
    assert _open_ids(store, NOW) == [conversation_id]  # stale
    [stale] = store.relay_links_to_open("slack", stale_before=NOW)
    assert stale.card_ref == "opening:a"

    # Re-taken against the stale token, atomically; then opened: the time is cleared.
    later = NOW + timedelta(minutes=2)
    assert store.set_relay_card(conversation_id, "opening:b", expect="opening:a", opening_at=later)
    assert not store.set_relay_card(conversation_id, "C1:1", expect="opening:a")  # the dead one
    assert _open_ids(store, NOW) == []
    assert store.set_relay_card(conversation_id, "C1:1", expect="opening:b")
    link = store.relay_link(conversation_id)
    assert link is not None and (link.card_ref, link.opening_at) == ("C1:1", None)
    assert _open_ids(store, later + timedelta(days=1)) == []  # an opened card is never listed


def test_an_opening_of_unknown_age_counts_as_stale(store: Store) -> None:
    """Links taken before the `opening_at` column existed have a token and no time."""
    conversation_id = _linked(store)
    with Session(store.engine) as session:
        session.exec(
            update(RelayLink)
            .where(col(RelayLink.conversation_id) == conversation_id)
            .values(card_ref="opening:old")
        )
        session.commit()
    assert _open_ids(store) == []
    assert _open_ids(store, NOW) == [conversation_id]


def test_only_one_process_retakes_a_stale_opening(store: Store) -> None:
    conversation_id = _linked(store)
    store.set_relay_card(conversation_id, "opening:dead", expect=None, opening_at=NOW)
    with ThreadPoolExecutor(max_workers=4) as pool:
        won = list(
            pool.map(
                lambda n: store.set_relay_card(
                    conversation_id, f"opening:{n}", expect="opening:dead", opening_at=NOW
                ),
                range(8),
            )
        )
    assert won.count(True) == 1


def test_a_new_handoff_clears_an_old_opening(store: Store) -> None:
    conversation_id = _linked(store)
    store.set_relay_card(conversation_id, "opening:a", expect=None, opening_at=NOW)
    store.open_relay_link(conversation_id, "slack", {}, NOW)
    link = store.relay_link(conversation_id)
    assert link is not None and (link.card_ref, link.opening_at) == (None, None)


def test_posted_replies(store: Store) -> None:
    conversation_id = store.get_or_create_conversation(KEY, "U1").id
    posted = store.add_reply(conversation_id, None, Reply.handoff("A person will reply."))
    unposted = store.add_reply(conversation_id, None, Reply.smalltalk("Hi!"))
    assert store.posted_replies([posted, unposted, "nope"]) == set()
    store.set_reply_platform_ref(posted, "C1:1.1")
    assert store.posted_replies([posted, unposted, "nope"]) == {posted}
    assert store.posted_replies([]) == set()


def test_relay_delivered_lists_sent_customer_messages_after_a_cursor(store: Store) -> None:
    conversation_id = store.get_or_create_conversation(KEY, "U1").id
    other = store.get_or_create_conversation(ConversationKey("slack", "T1", "D2", ""), "U2").id
    for n, (conversation, direction) in enumerate(
        [
            (conversation_id, "to_customer"),
            (conversation_id, "to_agent"),
            (other, "to_customer"),
            (conversation_id, "to_customer"),
            (conversation_id, "to_customer"),
        ]
    ):
        store.enqueue_relay(
            conversation,
            direction=direction,
            target_platform="slack",
            target_ref="x",
            text=f"m{n}",
            author="A1",
            origin_key=f"o{n}",
        )
    assert store.relay_delivered(conversation_id) == []  # nothing delivered yet
    for item in store.pending_relay("slack")[:4]:
        assert store.claim_relay_delivery(item.id) is False
        assert store.relay_delivered(conversation_id, after=item.id - 1) == []  # not posted yet
        store.mark_relay_sent(item.id)
    delivered = store.relay_delivered(conversation_id)
    assert [item.text for item in delivered] == ["m0", "m3"]  # m4 is still pending
    assert store.relay_delivered(conversation_id, after=delivered[0].id)[0].text == "m3"
    assert store.relay_delivered(conversation_id, after=delivered[-1].id) == []


def test_recent_turns_carry_reply_facts(store: Store) -> None:
    conversation_id = store.get_or_create_conversation(KEY, "U1").id
    source = Source("kb-1", 0.8, "Export", "https://help.example/export")
    first = store.add_message(conversation_id, Role.USER, "U1", "how do I export?", "m1")
    answer = store.add_reply(conversation_id, first, Reply.answer("Open Settings.", (source,), 0.8))
    store.record_feedback(
        FeedbackEvent("slack", answer, "U1", FeedbackValue.DOWN, event_id="f1", at=NOW)
    )
    second = store.add_message(conversation_id, Role.USER, "U1", "a person please", "m2")
    store.set_owner(conversation_id, Owner.HUMAN, actor="bot", reason="customer_request")
    store.add_reply(conversation_id, second, Reply.handoff("A person will reply."))
    store.add_message(conversation_id, Role.BOT, "relay", "A person has joined.")
    store.add_message(conversation_id, Role.AGENT, "A1", "Hi, I'm Ana.", "a1")
    # The same text again later: matched with the newer reply.
    third = store.add_message(conversation_id, Role.USER, "U1", "export?", "m3")
    again = replace(Reply.answer("Open Settings.", (source,), 0.7), id="again")
    store.add_reply(conversation_id, third, again)

    turns = store.recent_turns(conversation_id, 50)
    assert turns == [
        HistoryTurn(Role.USER, "how do I export?"),
        HistoryTurn(Role.BOT, "Open Settings.", ReplyKind.ANSWER, (source,), downvoted=True),
        HistoryTurn(Role.USER, "a person please"),
        HistoryTurn(Role.BOT, "A person will reply.", ReplyKind.HANDOFF),
        HistoryTurn(Role.BOT, "A person has joined."),  # the relay's notice: no reply facts
        HistoryTurn(Role.AGENT, "Hi, I'm Ana."),
        HistoryTurn(Role.USER, "export?"),
        HistoryTurn(Role.BOT, "Open Settings.", ReplyKind.ANSWER, (source,), downvoted=False),
    ]
    assert store.recent_turns(conversation_id, 2) == turns[-2:]
    assert store.recent_turns(conversation_id, 0) == []
    assert store.recent_turns("no-such-conversation", 5) == []


class _Desk:
    def __init__(self) -> None:
        self.cards: list[str] = []

    async def open_card(self, request: HandoffRequest) -> str:
        self.cards.append(request.conversation_id)
        return f"card-{len(self.cards)}"

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        return None


async def test_the_relay_reopens_a_dead_processs_card_once(store: Store) -> None:
    """Two live processes find the same dead opening: exactly one card is opened."""
    clock = [NOW]
    config = RelayConfig(desk="slack", opening_grace_s=60)
    relays = [Relay(store, config, clock=lambda: clock[0]) for _ in range(2)]
    desks = [_Desk(), _Desk()]
    for relay, desk in zip(relays, desks, strict=True):
        relay.register_desk("slack", desk)
    conversation_id = store.get_or_create_conversation(KEY, "U1").id
    relays[0].request(HandoffRequest(conversation_id, KEY, "U1", "slack", "q", "r"))
    store.set_relay_card(conversation_id, "opening:dead", expect=None, opening_at=NOW)

    clock[0] = NOW + timedelta(seconds=59)
    assert [await relay.deliver_pending("slack") for relay in relays] == [0, 0]
    clock[0] = NOW + timedelta(seconds=60)
    opened = await asyncio.gather(*(relay.deliver_pending("slack") for relay in relays))
    assert sorted(opened) == [0, 1]
    assert sum(len(desk.cards) for desk in desks) == 1
    link = store.relay_link(conversation_id)
    assert link is not None and link.card_ref == "card-1" and link.opening_at is None
