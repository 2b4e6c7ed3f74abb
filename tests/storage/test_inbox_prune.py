"""Pruning the inbox (`Store.prune_inbox`, `Sweeper.run`), on SQLite and PostgreSQL.

Finished rows ("done", "failed") go after the retention period, counted from their last change;
pending rows stay whatever their age; a message whose row was pruned is still refused when
delivered again (its `processed_event` row is kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from bot.model import utcnow
from bot.outbox import Sweeper
from bot.storage.store import Store
from bot.storage.tables import InboxItem

WEEK = timedelta(days=7)
PAYLOAD = {"message": {"text": "hi"}, "extra": {}}


def _row(
    store: Store,
    key: str,
    status: str,
    *,
    created: timedelta,
    done: timedelta | None = None,
) -> None:
    """An inbox row accepted `created` ago, in `status`, finished `done` ago."""
    assert store.accept_inbound("slack", key, PAYLOAD, hold_s=30)
    now = utcnow()
    values: dict[str, object] = {"status": status, "created_at": now - created}
    values["done_at"] = None if done is None else now - done
    with Session(store.engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(InboxItem).where(col(InboxItem.dedupe_key) == key).values(**values)
        )
        session.commit()


def test_prune_deletes_finished_rows_past_the_retention_only(store: Store) -> None:
    day = timedelta(days=1)
    _row(store, "old-done", "done", created=8 * day, done=8 * day)
    _row(store, "old-but-done-lately", "done", created=8 * day, done=day)
    _row(store, "recent-done", "done", created=day, done=day)
    _row(store, "old-failed", "failed", created=8 * day)
    _row(store, "recent-failed", "failed", created=day)
    _row(store, "old-pending", "pending", created=30 * day)

    assert store.prune_inbox(WEEK) == 2
    assert store.prune_inbox(WEEK) == 0
    left = {
        key: store.inbox_status("slack", key)
        for key in (
            "old-done",
            "old-but-done-lately",
            "recent-done",
            "old-failed",
            "recent-failed",
            "old-pending",
        )
    }
    assert left == {
        "old-done": None,
        "old-but-done-lately": "done",
        "recent-done": "done",
        "old-failed": None,
        "recent-failed": "failed",
        "old-pending": "pending",
    }
    # De-duplication outlives the row: the same event delivered again is refused.
    assert store.accept_inbound("slack", "old-done", PAYLOAD, hold_s=30) is False
    assert store.claim_event("slack", "old-failed") is False
    assert store.inbox_status("slack", "old-done") is None


async def test_the_sweeper_prunes_at_start_then_at_most_hourly(store: Store) -> None:
    day = timedelta(days=1)
    _row(store, "first", "done", created=10 * day, done=10 * day)
    sweeper = Sweeper(store, interval_s=0.01, inbox_retention_s=WEEK.total_seconds())
    task = asyncio.create_task(sweeper.run())
    try:
        await _until(lambda: store.inbox_status("slack", "first") is None)
        pruned_at = sweeper._pruned_at
        assert pruned_at is not None
        # Another old row, after the first prune: the next ones (every 10 ms) leave it alone.
        _row(store, "second", "done", created=10 * day, done=10 * day)
        await asyncio.sleep(0.3)
        assert store.inbox_status("slack", "second") == "done"
        assert sweeper._pruned_at == pruned_at
        # An hour later (as the sweeper's monotonic clock sees it) it prunes again.
        sweeper._pruned_at = pruned_at - Sweeper.PRUNE_EVERY_S
        await _until(lambda: store.inbox_status("slack", "second") is None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = datetime.now() + timedelta(seconds=seconds)
    while not predicate():
        assert datetime.now() < deadline, "timed out"
        await asyncio.sleep(0.01)
