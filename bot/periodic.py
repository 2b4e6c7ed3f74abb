"""Background loops that outlive their failures: the outbox sweeper, the handoff relay, the
Zendesk satisfaction poll.

A round that fails must not end the loop: expected trouble (the database or a platform away) is
logged as a warning, anything else with its traceback, and the next round comes as planned.
Cancellation ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["every", "logged"]

logger = logging.getLogger(__name__)

Expected = tuple[type[Exception], ...]


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
    `logged`."""
    while True:
        await logged(round_(), what, expected)
        await asyncio.sleep(interval_s)
