"""Per-user rate limits: a token bucket per platform user, held in this process.

``SUPPORTBOT_RATE_LIMIT=20/minute`` lets each platform user (platform, workspace, user id) send
20 messages at once and then one every three seconds. The engine asks `RateLimiter.check` before
any work on a turn (``Engine.handle_burst``): over the limit the customer gets one polite "slow
down" reply, then silence until the bucket has a token again; nothing is stored or searched.

Why in-process and not in the database: the check sits on the hot path of every message, and a
row per user updated on each message would add a write (and, with several workers, row-lock
contention) to every turn. The cost is that with N workers behind a load balancer a user can get
up to N times the limit in the worst case; the limit is a guard against floods and runaway
clients, not an exact quota. Buckets are kept for the most recent `max_keys` users (least recently
seen dropped first), so memory stays bounded under a flood of made-up user ids.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SLOW_DOWN_TEXT", "RateLimit", "RateLimiter", "Verdict"]

SLOW_DOWN_TEXT = (
    "You're sending messages faster than I can keep up with. Please wait a moment, then send "
    "your question again."
)

_UNITS: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `messages` per `period_s` seconds, with bursts of up to `messages`."""

    messages: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read ``20/minute``, ``5/second``, ``100/hour``, ``10/30s`` and the like.

        Raises:
            ValueError: the text is not such a limit; the message shows how to write one.
        """
        match = _LIMIT.match(text.lower())
        unit = _UNITS.get(match.group(3)) if match else None
        if match is None or unit is None:
            raise ValueError(
                f"SUPPORTBOT_RATE_LIMIT={text[:40]!r} is not a rate: write it as messages per "
                "period, e.g. 20/minute, 5/second, 100/hour or 10/30s"
            )
        messages = int(match.group(1))
        period = float(match.group(2) or 1) * unit
        if messages < 1 or period <= 0:
            raise ValueError(
                f"SUPPORTBOT_RATE_LIMIT={text[:40]!r} must allow at least one message in a "
                "period longer than zero (unset it for no limit)"
            )
        return cls(messages, period)

    @property
    def per_second(self) -> float:
        return self.messages / self.period_s


class Verdict(enum.StrEnum):
    """What to do with a message: handle it, say "slow down" once, or stay silent."""

    ALLOW = "allow"
    SLOW_DOWN = "slow_down"
    SILENT = "silent"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class RateLimiter:
    """Token buckets per key; safe to call from several threads.

    Args:
        limit: the rate allowed per key.
        clock: seconds, monotonic (a fake one in tests).
        max_keys: buckets kept; the least recently seen key is dropped past it (it starts
            full again if it comes back).
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_setting(cls, value: str | None) -> RateLimiter | None:
        """The limiter for ``SUPPORTBOT_RATE_LIMIT``; None when it is unset."""
        return None if not value else cls(RateLimit.parse(value))

    def check(self, key: str, cost: int = 1) -> Verdict:
        """Take `cost` tokens from `key`'s bucket if it has them.

        Returns:
            ALLOW (the tokens were taken), SLOW_DOWN (the first refusal since the last allowed
            message: say so once), or SILENT (refused again: say nothing).
        """
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(float(self.limit.messages), now)
                self._buckets[key] = bucket
                while len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(
                    float(self.limit.messages), bucket.tokens + elapsed * self.limit.per_second
                )
                bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                bucket.warned = False
                return Verdict.ALLOW
            if bucket.warned:
                return Verdict.SILENT
            bucket.warned = True
            return Verdict.SLOW_DOWN

    def __len__(self) -> int:
        return len(self._buckets)
