"""The debouncer on a manual clock: bursts, typing, head starts, cancellation, failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.debounce import Debouncer, ManualClock, MonotonicClock, Timing
from bot.model import ConversationKey, InboundMessage

KEY = ConversationKey("slack", "T1", "C1", "1700.1")
OTHER = ConversationKey("slack", "T1", "C1", "1700.2")


def message(text: str, user: str = "ann", key: ConversationKey = KEY) -> InboundMessage:
    return InboundMessage(key.platform, key.workspace, key.channel, user, text, text, key.thread)


class Recorder:
    def __init__(self) -> None:
        self.turns: list[list[str]] = []
        self.cancelled: list[list[str]] = []

    async def on_turn(self, messages: tuple[InboundMessage, ...]) -> None:
        self.turns.append([m.text for m in messages])

    async def on_cancel(self, messages: tuple[InboundMessage, ...]) -> None:
        self.cancelled.append([m.text for m in messages])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def debouncer(recorder: Recorder, clock: ManualClock, **timing: float) -> Debouncer:
    return Debouncer(
        recorder.on_turn,
        timing=Timing(**timing) if timing else Timing(2.0, 0.0),
        on_cancel=recorder.on_cancel,
        clock=clock,
    )


async def test_a_burst_becomes_one_turn(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock)

    turns.submit(message("hi"))
    await clock.advance(1.0)
    turns.submit(message("I can't log in"))
    await clock.advance(1.5)
    turns.submit(message("on my phone"))
    await clock.advance(1.9)
    assert recorder.turns == []
    assert [m.text for m in turns.pending(KEY, "ann")] == ["hi", "I can't log in", "on my phone"]

    await clock.advance(0.1)
    await turns.wait_idle()

    assert recorder.turns == [["hi", "I can't log in", "on my phone"]]
    assert turns.pending(KEY, "ann") == ()


async def test_messages_apart_are_separate_turns(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock)

    turns.submit(message("first question"))
    await clock.advance(2.5)
    turns.submit(message("second question"))
    await clock.advance(2.5)
    await turns.wait_idle()

    assert recorder.turns == [["first question"], ["second question"]]


async def test_people_and_conversations_are_kept_apart(
    clock: ManualClock, recorder: Recorder
) -> None:
    turns = debouncer(recorder, clock)

    turns.submit(message("ann here"))
    turns.submit(message("bob here", user="bob"))
    turns.submit(message("ann elsewhere", key=OTHER))
    await clock.advance(2.0)
    await turns.wait_idle()

    assert sorted(recorder.turns) == [["ann elsewhere"], ["ann here"], ["bob here"]]


async def test_typing_extends_the_window(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock)

    turns.submit(message("so the thing is"))
    await clock.advance(1.5)
    assert turns.extend(KEY, "ann")  # typing…
    await clock.advance(1.5)
    assert recorder.turns == []  # 3 s after the message, but only 1.5 s after the typing
    turns.submit(message("my notes vanished"))
    await clock.advance(2.0)
    await turns.wait_idle()

    assert recorder.turns == [["so the thing is", "my notes vanished"]]
    assert not turns.extend(KEY, "ann")  # nothing pending any more


async def test_typing_by_someone_else_extends_only_with_no_user(
    clock: ManualClock, recorder: Recorder
) -> None:
    turns = debouncer(recorder, clock)
    turns.submit(message("question"))

    assert not turns.extend(KEY, "bob")
    assert turns.extend(KEY)


async def test_head_start_delays_the_answer(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock, burst_window_s=2.0, head_start_s=30.0)

    turns.submit(message("does anyone know how to export?"))
    await clock.advance(29.0)
    assert recorder.turns == []
    await clock.advance(1.0)
    await turns.wait_idle()

    assert recorder.turns == [["does anyone know how to export?"]]


async def test_another_person_answering_within_the_head_start_cancels_the_bot(
    clock: ManualClock, recorder: Recorder
) -> None:
    turns = debouncer(recorder, clock, burst_window_s=2.0, head_start_s=30.0)

    turns.submit(message("does anyone know how to export?"))
    await clock.advance(10.0)
    assert not turns.human_replied(KEY, "ann")  # the asker's own message cancels nothing
    assert turns.human_replied(KEY, "bob")
    await clock.advance(60.0)
    await turns.wait_idle()

    assert recorder.turns == []
    assert recorder.cancelled == [["does anyone know how to export?"]]
    assert turns.pending(KEY, "ann") == ()
    assert not turns.human_replied(KEY, "bob")  # nothing left to cancel


async def test_a_reply_elsewhere_cancels_nothing(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock, burst_window_s=2.0, head_start_s=30.0)

    turns.submit(message("question"))
    assert not turns.human_replied(OTHER, "bob")
    await clock.advance(30.0)
    await turns.wait_idle()

    assert recorder.turns == [["question"]]


async def test_a_human_reply_after_the_bot_answered_changes_nothing(
    clock: ManualClock, recorder: Recorder
) -> None:
    turns = debouncer(recorder, clock, burst_window_s=2.0, head_start_s=5.0)

    turns.submit(message("question"))
    await clock.advance(5.0)
    await turns.wait_idle()

    assert not turns.human_replied(KEY, "bob")
    assert recorder.turns == [["question"]] and recorder.cancelled == []


async def test_timing_per_conversation(clock: ManualClock, recorder: Recorder) -> None:
    def timing(key: ConversationKey) -> Timing:
        return Timing(1.0, 10.0) if key == KEY else Timing(1.0, 0.0)

    turns = Debouncer(recorder.on_turn, timing=timing, clock=clock)
    turns.submit(message("shared", key=KEY))
    turns.submit(message("dm", key=OTHER))
    await clock.advance(1.0)
    await turns.wait_idle()
    assert recorder.turns == [["dm"]]
    await clock.advance(9.0)
    await turns.wait_idle()
    assert recorder.turns == [["dm"], ["shared"]]


async def test_flush_runs_pending_turns_now(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock)
    turns.submit(message("a"))
    turns.submit(message("b", user="bob"))

    await turns.flush()

    assert sorted(recorder.turns) == [["a"], ["b"]]
    await clock.advance(10.0)
    assert len(recorder.turns) == 2  # the cancelled timers do not fire again


async def test_close_drops_pending_turns(clock: ManualClock, recorder: Recorder) -> None:
    turns = debouncer(recorder, clock)
    turns.submit(message("a"))

    await turns.close()
    await clock.advance(10.0)

    assert recorder.turns == []


async def test_shut_down_answers_waiting_turns_and_reports_ones_past_the_grace(
    clock: ManualClock,
) -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
        if messages[0].text == "slow":
            await release.wait()
        seen.append(messages[0].text)

    turns = Debouncer(on_turn, timing=lambda key: Timing(2.0, 0.0), clock=clock)
    turns.submit(message("a"))
    assert await turns.shut_down(grace_s=5.0) is True
    assert seen == ["a"], "the waiting turn was answered at once, not dropped"

    slow = Debouncer(on_turn, timing=lambda key: Timing(2.0, 0.0), clock=clock)
    slow.submit(message("slow"))
    assert await slow.shut_down(grace_s=0.05) is False
    release.set()
    await asyncio.sleep(0)
    assert seen == ["a"], "the turn still running at the deadline was cancelled"


async def test_a_failing_turn_is_logged_and_the_next_one_runs(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
        if messages[0].text == "boom":
            raise RuntimeError("engine exploded")
        seen.append(messages[0].text)

    turns = Debouncer(on_turn, clock=clock)
    with caplog.at_level(logging.ERROR, logger="bot.debounce"):
        turns.submit(message("boom"))
        await clock.advance(2.0)
        await turns.wait_idle()
    turns.submit(message("fine"))
    await clock.advance(2.0)
    await turns.wait_idle()

    assert "could not run a turn" in caplog.text
    assert "engine exploded" in caplog.text
    assert seen == ["fine"]


async def test_cancelled_turn_without_on_cancel_is_dropped(clock: ManualClock) -> None:
    seen: list[str] = []

    async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
        seen.append(messages[0].text)

    turns = Debouncer(on_turn, timing=Timing(2.0, 10.0), clock=clock)
    turns.submit(message("q"))
    assert turns.human_replied(KEY, "bob")
    await clock.advance(20.0)
    assert seen == []


async def test_the_real_clock() -> None:
    clock = MonotonicClock()
    seen: list[list[str]] = []

    async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
        seen.append([m.text for m in messages])

    turns = Debouncer(on_turn, timing=Timing(0.05, 0.0), clock=clock)
    start = clock.now()
    turns.submit(message("a"))
    turns.submit(message("b"))
    await asyncio.sleep(0.2)
    await turns.wait_idle()

    assert seen == [["a", "b"]]
    assert clock.now() - start >= 0.05


async def test_busy_and_wait_done_cover_pending_and_running_turns(
    clock: ManualClock, recorder: Recorder
) -> None:
    turns = debouncer(recorder, clock)
    assert not turns.busy
    turns.submit(message("hi"))
    assert turns.busy

    waiter = asyncio.create_task(turns.wait_done())
    await clock.advance(1.0)
    assert not waiter.done()  # the turn is still pending
    await clock.advance(1.0)
    await asyncio.wait_for(waiter, 1.0)
    assert recorder.turns == [["hi"]]
    assert not turns.busy
