"""The replica lease on SQLite and PostgreSQL: one holder at a time, hand-over within the bound
when the holder dies, at once when it shuts down cleanly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from adapters.slack.lease import LeaseKeeper, holder_id
from bot.storage.store import Store

TTL = 1.0
RENEW = 0.2
NAME = "slack-socket:A0TEST"


@pytest.fixture(
    params=[
        pytest.param("sqlite_url", id="sqlite"),
        pytest.param("postgres_url", id="postgres", marks=pytest.mark.postgres),
    ]
)
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database, as two processes would have."""
    url: str = request.getfixturevalue(request.param)
    first = Store.from_url(url)
    second = Store.from_url(url, migrate=False)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


class Contender:
    """A replica's view: is it working (holding the connection) right now?"""

    def __init__(self, store: Store, name: str) -> None:
        self.working = False
        self.starts = 0
        self.keeper = LeaseKeeper(
            store, NAME, name, ttl=TTL, renew=RENEW, on_held=self.held, on_lost=self.lost
        )

    async def held(self) -> None:
        if not self.working:
            self.starts += 1
        self.working = True

    async def lost(self) -> None:
        self.working = False


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition()`` holds (polled: the keepers signal nothing)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if condition():
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def test_one_holder_and_hand_over_when_it_dies(stores: tuple[Store, Store]) -> None:
    a = Contender(stores[0], "replica-a")
    b = Contender(stores[1], "replica-b")
    await a.keeper.start()
    await b.keeper.start()
    try:
        assert a.working and not b.working
        # Several renewal rounds: the holder keeps it, the other keeps waiting.
        await asyncio.sleep(3 * RENEW)
        assert a.working and not b.working
        assert stores[0].lease_holder(NAME) == "replica-a"

        await a.keeper.abandon()  # dies: no more renewals, no release
        waited = await _until(lambda: b.working, within=TTL + RENEW + 2)
        assert waited <= TTL + RENEW + 0.5
        assert stores[1].lease_holder(NAME) == "replica-b"
        assert b.starts == 1
    finally:
        await a.keeper.stop()
        await b.keeper.stop()
    assert stores[0].lease_holder(NAME) is None


async def test_a_clean_shutdown_hands_over_at_once(stores: tuple[Store, Store]) -> None:
    a = Contender(stores[0], "replica-a")
    b = Contender(stores[1], "replica-b")
    await a.keeper.start()
    await b.keeper.start()
    try:
        await a.keeper.stop()
        assert not a.working
        waited = await _until(lambda: b.working, within=2 * RENEW + 1)
        assert waited <= 2 * RENEW + 0.2
    finally:
        await b.keeper.stop()


async def test_a_holder_that_lost_the_lease_stops_working(stores: tuple[Store, Store]) -> None:
    a = Contender(stores[0], "replica-a")
    await a.keeper.start()
    try:
        # Another process takes the lease over (e.g. after this one stalled past the TTL).
        with stores[1].engine.begin() as connection:
            connection.execute(text("UPDATE lease SET holder = 'replica-b'"))
        await _until(lambda: not a.working, within=RENEW + 1)
    finally:
        await a.keeper.stop()
    assert stores[0].lease_holder(NAME) == "replica-b"  # not released: it was not a's


@pytest.mark.parametrize("contenders", [8])
async def test_concurrent_takes_grant_one_holder(
    stores: tuple[Store, Store], contenders: int
) -> None:
    names = [holder_id() for _ in range(contenders)]
    granted = await asyncio.gather(
        *(
            asyncio.to_thread(stores[i % 2].acquire_lease, NAME, name, TTL)
            for i, name in enumerate(names)
        )
    )
    assert sum(granted) == 1
    assert stores[0].lease_holder(NAME) == names[granted.index(True)]


def test_the_renewal_must_be_shorter_than_the_ttl(stores: tuple[Store, Store]) -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="below the TTL"):
        LeaseKeeper(stores[0], NAME, "x", ttl=1.0, renew=1.0, on_held=nothing, on_lost=nothing)
