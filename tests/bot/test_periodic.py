"""bot.periodic: background loops that log a failed round and go on."""

from __future__ import annotations

import asyncio
import logging

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
