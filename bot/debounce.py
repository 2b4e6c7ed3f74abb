"""Pending turns: bursts of messages become one turn, and people get a head start.

People often send a question in pieces ("hi" … "I can't log in" … "on my phone"). The
`Debouncer` holds a person's messages in a conversation until they stop for
`burst_window_seconds`, then runs one turn for all of them: one answer to the joined text. A
typing indicator (`extend`) keeps the turn open a little longer.

In shared channels people often answer each other. With a head start (`head_start_seconds`), the
turn also waits that long after its first message, and if another person answers in the meantime
(`human_replied`) the bot's turn is cancelled: its messages are recorded, unanswered.

Everything runs on one asyncio event loop: call `submit`, `extend` and `human_replied` from it.
Time comes from an injectable `Clock`, so tests drive it with `ManualClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot.model import ConversationKey, InboundMessage

__all__ = ["Clock", "Debouncer", "ManualClock", "MonotonicClock", "Timing"]

logger = logging.getLogger(__name__)

TurnHandler = Callable[[tuple[InboundMessage, ...]], Awaitable[None]]


class Clock(Protocol):
    """Where the debouncer gets the time, and how it waits."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told to (`advance`): for tests.

    Args:
        start: the time it shows at first.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move the time forward, waking every sleeper due on the way, in order."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle() -> None:
    """Let woken tasks run until they wait again."""
    for _ in range(5):
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a pending turn waits.

    Attributes:
        burst_window_s: the turn runs once its person has been quiet this long.
        head_start_s: and not before this long after its first message (0: no head start).
    """

    burst_window_s: float = 2.0
    head_start_s: float = 0.0


@dataclass(slots=True)
class _Pending:
    key: ConversationKey
    user: str
    messages: list[InboundMessage]
    deadline: float
    window: float
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Debouncer:
    """Groups each person's messages per conversation into turns, one answer per turn.

    Args:
        on_turn: runs a turn with its messages, oldest first (e.g. `Engine.handle_burst` and
            posting the reply). Its exceptions are logged: they stay inside the turn.
        timing: the waits, or a function of the conversation giving them (per-channel settings);
            `Timing()` by default.
        on_cancel: receives the messages of a turn cancelled because another person answered
            (e.g. `Engine.record`, so they are kept unanswered). None drops them.
        clock: the time source; the real one by default.
    """

    def __init__(
        self,
        on_turn: TurnHandler,
        *,
        timing: Timing | Callable[[ConversationKey], Timing] | None = None,
        on_cancel: TurnHandler | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._on_turn = on_turn
        self._on_cancel = on_cancel
        self._timing = timing if timing is not None else Timing()
        self.clock: Clock = clock or MonotonicClock()
        self._pending: dict[tuple[ConversationKey, str], _Pending] = {}
        self._running: set[asyncio.Task[None]] = set()

    def _timing_for(self, key: ConversationKey) -> Timing:
        return self._timing(key) if callable(self._timing) else self._timing

    def submit(self, message: InboundMessage) -> None:
        """Add a message to its person's pending turn in its conversation (or start one)."""
        slot = (message.conversation, message.user)
        now = self.clock.now()
        pending = self._pending.get(slot)
        if pending is None:
            timing = self._timing_for(message.conversation)
            pending = _Pending(
                message.conversation,
                message.user,
                [message],
                deadline=now + max(timing.burst_window_s, timing.head_start_s),
                window=timing.burst_window_s,
            )
            self._pending[slot] = pending
            pending.task = asyncio.get_running_loop().create_task(self._wait_then_run(pending))
            return
        pending.messages.append(message)
        pending.deadline = max(pending.deadline, now + pending.window)

    def extend(self, key: ConversationKey, user: str | None = None) -> bool:
        """Someone is typing: keep their pending turn open one more burst window.

        Args:
            key: the conversation.
            user: who is typing; None extends every pending turn in the conversation.

        Returns:
            Whether a pending turn was extended.
        """
        now = self.clock.now()
        extended = False
        for pending in self._pending.values():
            if pending.key == key and (user is None or pending.user == user):
                pending.deadline = max(pending.deadline, now + pending.window)
                extended = True
        return extended

    def human_replied(self, key: ConversationKey, user: str) -> bool:
        """Another person answered in the conversation: cancel the bot's pending turns there.

        Turns of `user` themselves are kept (a person does not answer their own question).

        Returns:
            Whether a pending turn was cancelled.
        """
        cancelled = [p for p in self._pending.values() if p.key == key and p.user != user]
        for pending in cancelled:
            del self._pending[(pending.key, pending.user)]
            if pending.task is not None:
                pending.task.cancel()
            logger.info(
                "conversation %s: a person answered first; the bot's turn is cancelled", key
            )
            if self._on_cancel is not None:
                self._start(self._on_cancel, tuple(pending.messages), "record a cancelled turn")
        return bool(cancelled)

    def pending(self, key: ConversationKey, user: str) -> tuple[InboundMessage, ...]:
        """The messages waiting in a person's pending turn (empty when none)."""
        pending = self._pending.get((key, user))
        return tuple(pending.messages) if pending else ()

    @property
    def busy(self) -> bool:
        """Whether a turn is pending or running (or a cancelled one is being recorded)."""
        return bool(self._pending or self._running)

    async def wait_done(self) -> None:
        """Wait until no turn is pending or running (pending ones run when their wait ends)."""
        while self.busy:
            tasks = [p.task for p in self._pending.values() if p.task is not None]
            await asyncio.gather(*tasks, *self._running, return_exceptions=True)
            await asyncio.sleep(0)

    async def flush(self) -> None:
        """Run every pending turn now, and wait for all running turns to finish."""
        for pending in list(self._pending.values()):
            self._fire(pending)
        await self.wait_idle()

    async def wait_idle(self) -> None:
        """Wait until no turn is running (pending ones keep waiting)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the waits and drop pending turns; wait for running turns to finish."""
        for pending in list(self._pending.values()):
            if pending.task is not None:
                pending.task.cancel()
        self._pending.clear()
        await self.wait_idle()

    async def shut_down(self, grace_s: float) -> bool:
        """At an adapter's shutdown: answer the waiting turns now and give them and the running
        ones up to `grace_s` seconds; turns still running then are cancelled. Returns False
        when some were (their replies are not posted; the adapter says so in its log)."""
        finished = True
        try:
            async with asyncio.timeout(grace_s):
                await self.flush()
        except TimeoutError:
            finished = False
        await self.close()
        return finished

    async def _wait_then_run(self, pending: _Pending) -> None:
        while True:
            delay = pending.deadline - self.clock.now()
            if delay <= 0:
                break
            await self.clock.sleep(delay)
        self._fire(pending)

    def _fire(self, pending: _Pending) -> None:
        slot = (pending.key, pending.user)
        if self._pending.get(slot) is not pending:
            return
        del self._pending[slot]
        current = asyncio.current_task()
        if pending.task is not None and pending.task is not current:
            pending.task.cancel()
        self._start(self._on_turn, tuple(pending.messages), "run a turn")

    def _start(self, handler: TurnHandler, messages: tuple[InboundMessage, ...], what: str) -> None:
        async def guarded() -> None:
            try:
                await handler(messages)
            except Exception:
                logger.exception(
                    "could not %s conversation=%s messages=%s",
                    what,
                    messages[0].conversation,
                    [m.message_id for m in messages],
                )

        task = asyncio.get_running_loop().create_task(guarded())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
