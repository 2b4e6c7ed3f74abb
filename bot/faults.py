"""Fault injection for crash tests: end the process at a named point, once.

Set ``SUPPORTBOT_FAULT`` to a comma-separated list of points (see `POINTS`) and
``SUPPORTBOT_FAULT_ONCE`` to a path prefix: the first process to reach a point creates the file
``<prefix>.<point>`` and ends at once with ``os._exit(137)``, as a SIGKILL would leave it (no
clean-up, no flush). Later visits of that point, in any process, find the file and carry on, so
each point ends one process once and a restarted worker does not crash again. Without
``SUPPORTBOT_FAULT`` this does nothing; never set it in production.
"""

from __future__ import annotations

import logging
import os
from typing import Final

__all__ = ["POINTS", "crash_point"]

logger = logging.getLogger(__name__)

POINTS: Final = frozenset({"after_accept", "after_reply_stored"})
"""``after_accept``: an inbound message is recorded in the inbox and acknowledged, not answered.
``after_reply_stored``: a reply is stored in the outbox, not sent."""


def crash_point(name: str) -> None:
    """End the process here if ``SUPPORTBOT_FAULT`` names `name` and no process did yet."""
    wanted = os.environ.get("SUPPORTBOT_FAULT")
    if not wanted or name not in {part.strip() for part in wanted.split(",")}:
        return
    prefix = os.environ.get("SUPPORTBOT_FAULT_ONCE")
    if not prefix:
        return
    try:
        fd = os.open(f"{prefix}.{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{name} {os.getpid()}\n".encode())
    os.close(fd)
    logger.critical("fault injection: process %d ends at %s", os.getpid(), name)
    os._exit(137)
