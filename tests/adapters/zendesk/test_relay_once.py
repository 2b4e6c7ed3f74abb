"""Zendesk relay posts across a crash: internal notes on the agents' ticket (`ZendeskDesk`) and
public comments on a customer's ticket (`ZendeskCustomerChannel`) are added once.

The real relay runs over a database two "processes" share (two stores), the real adapter's
client talks to the Zendesk emulator, and a process dies right after Zendesk took a post
(`PostsThenDies`) or right before it sent one (`DiesBeforePosting`). Each ticket has earlier
audits, and the emulator pages audits two at a time, so the audit looked for is a few pages in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.zendesk import ZendeskAdapter
from adapters.zendesk.client import POST_ID_KEY
from adapters.zendesk.convert import conversation_key
from adapters.zendesk.relay import ZendeskCustomerChannel, ZendeskDesk
from bot.relay import Relay, RelayConfig
from bot.service import Services
from bot.storage.store import Store
from tests.adapters.zendesk.conftest import BOT_USER_ID, SUBDOMAIN, make_settings
from tests.adapters.zendesk.emulator import AGENT_ID, ZendeskEmulator
from tests.support import (
    DATABASE_BACKENDS,
    Killed,
    PostsThenDies,
    SetClock,
    enqueue_both_ways,
    shared_database,
)

DESK_TICKET = 601
CUSTOMER_TICKET = 4242
CUSTOMER_KEY = conversation_key(SUBDOMAIN, CUSTOMER_TICKET)
TO_AGENT = "my invoice is wrong"
TO_CUSTOMER = "Hi, Ana here."


class DiesBeforePosting:
    """A relay desk or customer channel whose process dies before it sends anything."""

    async def post(self, *args: Any, **kwargs: Any) -> str | None:
        raise Killed


@pytest.fixture(params=DATABASE_BACKENDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The relay's database, shared by the process that dies and the one that goes on."""
    with shared_database(request.param, tmp_path, "supportbot_zendesk_relay") as url:
        yield url


@pytest.fixture
def stores(shared_url: str) -> Iterator[list[Store]]:
    opened = [Store.from_url(shared_url), Store.from_url(shared_url)]
    try:
        yield opened
    finally:
        for store in opened:
            store.close()


@pytest.fixture
async def adapter(services: Services, emulator: ZendeskEmulator) -> AsyncIterator[ZendeskAdapter]:
    """The real adapter (its API client on the emulator), with both tickets already holding
    a few comments, so a ticket's audits take several pages."""
    zendesk = ZendeskAdapter(services, make_settings(emulator))
    emulator.add_ticket(CUSTOMER_TICKET, description="Where is my refund?")
    emulator.add_ticket(DESK_TICKET, requester_id=BOT_USER_ID, description="the transcript")
    for ticket_id in (CUSTOMER_TICKET, DESK_TICKET):
        for n in range(3):
            await zendesk.client.update_ticket(
                ticket_id, {"comment": {"body": f"earlier {n}", "author_id": AGENT_ID}}
            )
    try:
        yield zendesk
    finally:
        await zendesk.client.aclose()


def _enqueue_both(store: Store) -> None:
    """A customer's message for the agents' ticket and an agent's reply for the customer's."""
    conversation = store.get_or_create_conversation(CUSTOMER_KEY, str(CUSTOMER_TICKET))
    enqueue_both_ways(
        store,
        conversation.id,
        "zendesk",
        to_agent=(str(DESK_TICKET), TO_AGENT),
        to_customer=(str(CUSTOMER_KEY), TO_CUSTOMER),
    )


def _relayed(emulator: ZendeskEmulator, ticket_id: int, text: str) -> list[dict[str, Any]]:
    return [c for c in emulator.bot_comments(ticket_id) if text in c["html_body"]]


async def _die_then_survive(
    stores: list[Store], adapter: ZendeskAdapter, dying_desk: Any, dying_channel: Any
) -> None:
    """Both messages claimed by a process that dies at each post, then the claims taken over
    by another process once they have expired."""
    conversation_id = stores[0].get_or_create_conversation(CUSTOMER_KEY, "").id
    clock = SetClock(datetime.now(UTC))
    dying = Relay(stores[0], RelayConfig(desk="zendesk"), clock=clock)
    dying.register_desk("zendesk", dying_desk)
    dying.register_channel("zendesk", dying_channel)
    for _ in range(2):  # each round dies at its first post, as a process would
        with pytest.raises(Killed):
            await dying.deliver_pending("zendesk")
    assert {i.status for i in stores[1].relay_outbox(conversation_id)} == {"posting"}

    survivor = Relay(stores[1], RelayConfig(desk="zendesk"), clock=clock)
    survivor.register_desk("zendesk", ZendeskDesk(adapter))
    survivor.register_channel("zendesk", ZendeskCustomerChannel(adapter))
    assert await survivor.deliver_pending("zendesk") == 0  # the claims are still fresh
    clock.now += timedelta(seconds=survivor.config.claim_timeout_s)
    assert await survivor.deliver_pending("zendesk") == 2
    assert {i.status for i in stores[1].relay_outbox(conversation_id)} == {"sent"}


def _assert_posted_once(emulator: ZendeskEmulator, stores: list[Store]) -> None:
    """One comment per message, recorded by its id, carrying its post id on its audit."""
    conversation_id = stores[1].get_or_create_conversation(CUSTOMER_KEY, "").id
    post_ids = {i.text: f"relay-{i.id}" for i in stores[1].relay_outbox(conversation_id)}
    for ticket_id, text, public in [
        (DESK_TICKET, TO_AGENT, False),
        (CUSTOMER_TICKET, TO_CUSTOMER, True),
    ]:
        [comment] = _relayed(emulator, ticket_id, text)
        assert comment["public"] is public
        assert stores[1].has_event("zendesk", f"relay-post:{comment['id']}")
        audit = emulator.audit_of(ticket_id, comment)
        assert audit["metadata"]["custom"] == {POST_ID_KEY: post_ids[text]}


async def test_a_relayed_post_that_reached_zendesk_before_its_process_died_is_not_repeated(
    stores: list[Store], adapter: ZendeskAdapter, emulator: ZendeskEmulator
) -> None:
    _enqueue_both(stores[0])
    await _die_then_survive(
        stores,
        adapter,
        PostsThenDies(ZendeskDesk(adapter)),
        PostsThenDies(ZendeskCustomerChannel(adapter)),
    )
    # Found in the tickets' audits by their post ids: one comment each on Zendesk.
    _assert_posted_once(emulator, stores)
    reads = emulator.audit_reads()
    assert f"/api/v2/tickets/{DESK_TICKET}/audits.json" in reads
    assert f"/api/v2/tickets/{CUSTOMER_TICKET}/audits.json" in reads
    assert len(reads) > 2  # the audits took several pages


async def test_a_retaken_post_that_never_reached_zendesk_is_posted_once(
    stores: list[Store], adapter: ZendeskAdapter, emulator: ZendeskEmulator
) -> None:
    _enqueue_both(stores[0])
    await _die_then_survive(stores, adapter, DiesBeforePosting(), DiesBeforePosting())
    _assert_posted_once(emulator, stores)
    assert emulator.audit_reads()  # looked for an earlier copy first, found none


async def test_a_post_zendesk_applied_but_answered_500_to_is_not_repeated(
    stores: list[Store], adapter: ZendeskAdapter, emulator: ZendeskEmulator
) -> None:
    _enqueue_both(stores[0])
    clock = SetClock(datetime.now(UTC))
    relay = Relay(stores[0], RelayConfig(desk="zendesk"), clock=clock)
    relay.register_desk("zendesk", ZendeskDesk(adapter))
    relay.register_channel("zendesk", ZendeskCustomerChannel(adapter))
    # Zendesk adds both comments and loses both answers (a 500 after the change).
    emulator.storm(statuses=(500,), calls=2, applied_500=True)
    assert await relay.deliver_pending("zendesk") == 0
    assert emulator.storm_answers == [500, 500]
    assert not emulator.audit_reads()  # a first try looks for nothing
    clock.now += timedelta(seconds=relay.config.retry_max_s)
    assert await relay.deliver_pending("zendesk") == 2
    _assert_posted_once(emulator, stores)
