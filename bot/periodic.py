"""Background loops that outlive their failures: the outbox sweeper, the handoff relay, the
Zendesk satisfaction poll.

A round that fails must not end the loop: expected trouble (the database or a platform away) is
logged as a warning, anything else with its traceback, and the next round comes as planned.
Cancellation ends the loop, once the round in flight, if any, has finished (`FINISH_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["FINISH_S", "every", "logged"]

logger = logging.getLogger(__name__)

Expected = tuple[type[Exception], ...]

#: How long a cancelled loop waits for its round in flight (`every`): a healthy round takes
#: milliseconds; one stuck behind a platform's rate limits is cut short, and its messages are
#: posted again, once, by the next process (`bot.relay`).
FINISH_S = 5.0


async def logged(work: Awaitable[object], what: str, expected: Expected = ()) -> bool:
    """Await `work`; True when it finished. An `expected` exception is logged as a warning
    ("WHAT skipped: ..."), any other with its traceback ("WHAT failed"); neither is raised."""
    try:
        await work
    except expected as exc:
        logger.warning("%s skipped: %s", what, exc)
        return False
    except Exception:
        logger.exception("%s failed", what)
        return False
    return True


async def every(
    interval_s: float,
    round_: Callable[[], Awaitable[object]],
    what: str,
    expected: Expected = (),
) -> None:
    """Run `round_` now and then every `interval_s` seconds until cancelled, each round
    `logged`.

    Cancelled during a round (a process shutting down), the loop lets that round finish, for
    up to `FINISH_S` seconds, before it ends: a relay round that has posted a message records
    it as sent, where an interrupted one would leave it to be posted again by the next
    process. A round still running then, or a second cancellation, is cancelled too.
    """
    while True:
        current = asyncio.ensure_future(logged(round_(), what, expected))
        try:
            await asyncio.shield(current)
        except asyncio.CancelledError:
            if not current.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(current, FINISH_S)
            raise
        await asyncio.sleep(interval_s)
