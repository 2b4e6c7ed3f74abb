"""bot.periodic: background loops that log a failed round and go on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from bot.errors import StorageError
from bot.periodic import every, logged


async def test_logged_says_which_failures_were_expected(caplog: pytest.LogCaptureFixture) -> None:
    async def fine() -> None:
        return None

    async def database_away() -> None:
        raise StorageError("cannot reach PostgreSQL")

    async def bug() -> None:
        raise KeyError("oops")

    caplog.set_level(logging.WARNING, logger="bot.periodic")
    assert await logged(fine(), "sweep") is True
    assert await logged(database_away(), "sweep", (StorageError,)) is False
    assert await logged(bug(), "sweep", (StorageError,)) is False
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "sweep skipped: cannot reach PostgreSQL"),
        ("ERROR", "sweep failed"),
    ]
    assert caplog.records[1].exc_info is not None  # the traceback of the unexpected one


async def test_every_goes_on_after_failed_rounds_until_cancelled() -> None:
    rounds: list[int] = []
    three = asyncio.Event()

    async def round_() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 3:
            three.set()
        if len(rounds) % 2:
            raise RuntimeError("every other round fails")

    task = asyncio.create_task(every(0.01, round_, "test loop"))
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds[:3] == [0, 1, 2]


async def test_a_cancelled_loop_finishes_the_round_in_flight_and_starts_no_other() -> None:
    rounds: list[str] = []
    posted, release = asyncio.Event(), asyncio.Event()

    async def round_() -> None:
        rounds.append("posted")
        posted.set()
        await release.wait()  # e.g. recording what it posted
        rounds.append("recorded")

    task = asyncio.create_task(every(0.01, round_, "test loop"))
    await asyncio.wait_for(posted.wait(), 5)
    task.cancel()  # mid-round
    await asyncio.sleep(0.05)
    assert not task.done(), "the loop ended before its round finished"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == ["posted", "recorded"]


def _stuck() -> tuple[Callable[[], Awaitable[None]], asyncio.Event, list[bool]]:
    """A round that never ends: the round, an event set once it started, and a list that gets
    True when it is cancelled."""
    started, stopped = asyncio.Event(), []

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    return stuck, started, stopped


async def test_a_second_cancellation_stops_the_round_too() -> None:
    stuck, started, stopped = _stuck()
    task = asyncio.create_task(every(0.01, stuck, "test loop"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not stopped  # still given its time
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert stopped == [True]  # the round itself was cancelled, not left running


async def test_a_round_that_outlasts_its_time_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import periodic

    monkeypatch.setattr(periodic, "FINISH_S", 0.1)
    stuck, started, stopped = _stuck()
    task = asyncio.create_task(every(0.01, stuck, "test loop"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert stopped == [True]
