"""One holder at a time across replicas, through a lease row in the shared database.

Every replica runs a `LeaseKeeper`: every ``renew`` seconds it tries to take or renew the lease
(one atomic upsert, `Store.acquire_lease`). The holder keeps it for ``ttl`` seconds past each
renewal; when the holder dies (stops renewing), the lease expires and the next replica to try takes
it: hand-over happens within ``ttl + renew`` seconds of the holder's last renewal. A holder that
cannot renew (lease taken, database unreachable) gives up its work at once, so two replicas never
work at the same time for longer than one renewal round, provided their clocks agree.

Used for Socket Mode, where several processes with the same app token would each receive a share
of the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from uuid import uuid4

from bot.errors import StorageError
from bot.storage.store import Store

__all__ = ["LeaseKeeper", "holder_id"]

logger = logging.getLogger(__name__)


def holder_id() -> str:
    """An id for this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


class LeaseKeeper:
    """Keeps trying to hold the lease `name`; runs callbacks as it gains and loses it.

    Args:
        store: the shared database.
        name: the lease's name (e.g. ``"slack-socket:A0123"``).
        holder: this process's id.
        ttl: seconds the lease lasts after each renewal.
        renew: seconds between tries (well below ``ttl``).
        on_held: awaited after every successful take or renewal (make it idempotent: e.g.
            "connect unless connected"). An exception is logged; the lease is kept.
        on_lost: awaited when the lease is lost or given up, once per loss.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        holder: str,
        *,
        ttl: float,
        renew: float,
        on_held: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        if not 0 < renew < ttl:
            raise ValueError(f"the renewal interval ({renew} s) must be below the TTL ({ttl} s)")
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.renew = renew
        self._on_held = on_held
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self.held = False

    async def start(self) -> None:
        """Start trying in the background (the first try runs before this returns)."""
        if self._task is not None:
            return
        await self._round()
        self._task = asyncio.create_task(self._run(), name=f"lease:{self.name}")

    async def _try(self) -> bool:
        try:
            return await asyncio.to_thread(
                self.store.acquire_lease, self.name, self.holder, self.ttl
            )
        except StorageError as e:
            logger.warning("lease %s: cannot renew (%s); treating it as lost", self.name, e)
            return False

    async def _round(self) -> None:
        granted = await self._try()
        if granted:
            if not self.held:
                logger.info("lease %s taken by %s", self.name, self.holder)
            self.held = True
            try:
                await self._on_held()
            except Exception:
                logger.exception("lease %s: start-up work failed; retrying next round", self.name)
        elif self.held:
            logger.warning("lease %s lost by %s", self.name, self.holder)
            await self._lose()

    async def _lose(self) -> None:
        self.held = False
        try:
            await self._on_lost()
        except Exception:
            logger.exception("lease %s: stopping work failed", self.name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew)
            await self._round()

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop trying; stop the work and release the lease so another replica takes over now."""
        await self._cancel()
        if self.held:
            await self._lose()
            try:
                await asyncio.to_thread(self.store.release_lease, self.name, self.holder)
            except StorageError as e:
                logger.warning("lease %s: cannot release (%s); it expires by itself", self.name, e)
            else:
                logger.info("lease %s released by %s", self.name, self.holder)

    async def abandon(self) -> None:
        """Stop renewing without releasing or stopping the work: what a crash looks like to the
        other replicas (for tests and drills)."""
        await self._cancel()
