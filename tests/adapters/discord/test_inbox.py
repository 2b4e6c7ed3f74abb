"""Discord messages through the inbox (`bot.outbox`), against the fake Discord.

Every message the bot will answer is recorded before its turn and marked done after it; a
message that a dead process accepted is answered once by the next process's sweeper (the row
is written as that process left it: accepted, its hold over, no turn run); a message delivered
twice, or delivered again by the REST catch-up after the sweeper answered it, is answered once.
A button click that speaks for the customer ("Talk to a person") goes the same way: Discord
never delivers an interaction again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from adapters.discord.client import SupportBotClient
from adapters.discord.convert import DM_WORKSPACE, HANDOFF_TEXT, PLATFORM, Placement
from adapters.discord.recovery import inbox_key, inbox_payload
from adapters.discord.render import HANDOFF_ID
from bot.engine import Engine
from bot.model import InboundMessage, utcnow
from bot.service import Services
from bot.storage.store import Store
from bot.storage.tables import InboxItem
from tests.adapters.discord.conftest import WAIT, running, short_policies
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.exactly_once import distinct_questions, replies_per_message, unposted_replies
from tests.support import fresh_postgres_database

QUESTION = "How do I reset my password?"
Bot = Callable[..., AbstractAsyncContextManager[SupportBotClient]]


def _key(message_id: int, revision: str = "") -> str:
    return f"gateway:{message_id}" + (f":{revision}" if revision else "")


def _abandoned(
    fake: FakeDiscord,
    store: Store,
    channel_id: int,
    text: str,
    where: Placement,
    *,
    author_id: int | None = None,
) -> int:
    """A customer's message that a process accepted and died with: on Discord (never
    delivered again), and in the inbox as `_accept` writes it, its hold already over."""
    payload = fake.message_payload(channel_id, text, author_id=author_id)
    message_id = int(payload["id"])
    fake.messages[message_id] = payload
    in_guild = "guild_id" in payload
    inbound = InboundMessage(
        platform=PLATFORM,
        workspace=str(fake.guild_id) if in_guild else DM_WORKSPACE,
        channel=str(channel_id),
        thread=str(message_id) if in_guild else "",
        user=str(author_id or fake.customer_id),
        message_id=str(message_id),
        text=text,
        sent_at=utcnow(),
        raw={"channel_id": channel_id, "message_id": message_id, "why": "test"},
    )
    assert inbox_key(inbound) == _key(message_id)
    assert store.accept_inbound(
        PLATFORM, _key(message_id), inbox_payload(inbound, where), hold_s=-1
    )
    return message_id


async def _answers(fake: FakeDiscord, channel_id: int, count: int = 1) -> list[dict[str, object]]:
    found = await fake.wait_for(
        lambda: len(fake.bot_messages(channel_id)) >= count and fake.bot_messages(channel_id),
        WAIT * 3,
        f"{count} answer(s) in channel {channel_id}",
    )
    return list(found)


async def _settled(engine: Engine, sent: list[int]) -> None:
    """Every message in `sent` has exactly one reply, recorded as posted."""

    def done() -> bool:
        counts = replies_per_message(engine.store.engine, PLATFORM)
        return all(counts.get(str(m)) == 1 for m in sent) and not unposted_replies(
            engine.store.engine, PLATFORM
        )

    await _wait(done, "every message answered once")


async def _wait(predicate: Callable[[], object], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT * 3
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def pg_engine(services: Services) -> Iterator[Engine]:
    """The real engine on a fresh PostgreSQL database."""
    with fresh_postgres_database("supportbot_discord") as url:
        store = Store.from_url(url)
        yield Engine(store, services.engine.responder, policies=short_policies())
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.getfixturevalue("engine" if request.param == "sqlite" else "pg_engine")
    return engine


async def test_an_answered_message_is_in_the_inbox_and_marked_done(
    fake: FakeDiscord, engine: Engine, bot: Bot
) -> None:
    store = engine.store
    async with bot():
        dm = await fake.post_message(fake.dm_channel, QUESTION)
        await _answers(fake, fake.dm_channel)
        question = await fake.post_message(fake.support_channel, QUESTION)
        await _answers(fake, question)  # in the thread started from it
        await _wait(lambda: store.inbox_status(PLATFORM, _key(question)) == "done", "done")
        # An edit is its own delivery (as on Slack), recorded under its revision.
        await fake.edit_message(dm, "How do I reset my password? I use SSO.")
        await _wait(lambda: store.counts()["inbox"] == 3, "the edit in the inbox")
        await engine_idle(fake)
    with Session(store.engine) as session:
        rows = list(session.exec(select(InboxItem).order_by(col(InboxItem.id))))
    assert [r.dedupe_key for r in rows[:2]] == [_key(dm), _key(question)]
    assert rows[2].dedupe_key == _key(dm, str(rows[2].payload["message"]["revision"]))
    assert [r.status for r in rows] == ["done"] * 4  # with `engine_idle`'s DM
    assert rows[0].payload["extra"] == {"placement": "same_channel"}
    assert rows[1].payload["extra"] == {"placement": "new_thread"}
    # Messages the bot does not answer are not kept.
    async with bot():
        await fake.post_message(fake.general_channel, QUESTION)  # not addressed
        await engine_idle(fake)
    assert store.counts()["inbox"] == 5  # only `engine_idle`'s DM more


async def engine_idle(fake: FakeDiscord) -> None:
    """Let in-flight events finish: a DM answered proves the gateway got this far."""
    before = len(fake.bot_messages(fake.dm_channel))
    await fake.post_message(fake.dm_channel, "hello")
    await _answers(fake, fake.dm_channel, before + 1)
    await asyncio.sleep(0.2)


async def test_a_dead_process_s_message_is_answered_once_by_the_next_one(
    fake: FakeDiscord, engine: Engine, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    store = engine.store
    in_channel = _abandoned(fake, store, fake.support_channel, QUESTION, Placement.NEW_THREAD)
    in_dm = _abandoned(
        fake, store, fake.dm_channel, "How do I export my data?", Placement.SAME_CHANNEL
    )
    caplog.set_level(logging.INFO, logger="adapters.discord")
    async with bot():
        # The sweeper answers both as soon as the gateway is ready: in a thread started from
        # the channel's question, and in the DM.
        (answer,) = await _answers(fake, in_channel)
        assert "Forgot password?" in str(answer["content"])
        await _answers(fake, fake.dm_channel)
        await _settled(engine, [in_channel, in_dm])
        # The sweeper marks a row done once the posts are through: wait for it.
        await _wait(
            lambda: (
                {store.inbox_status(PLATFORM, _key(m)) for m in (in_channel, in_dm)} == {"done"}
            ),
            "both inbox rows done",
        )

        # The session is lost: the client reads the support channel over REST and finds the
        # question again; the inbox knows it, so it is not answered a second time.
        await fake.invalidate_session()
        await asyncio.wait_for(fake.connected.wait(), WAIT)
        await _wait(
            lambda: any(
                _key(in_channel) in r.getMessage() and "already accepted" in r.getMessage()
                for r in caplog.records
            ),
            "the caught-up question refused by the inbox",
        )
        await engine_idle(fake)
    assert len(fake.bot_messages(in_channel)) == 1
    assert len(fake.bot_messages(fake.dm_channel)) == 2  # the answer and `engine_idle`'s
    assert (
        len(fake.find("POST", rf"/channels/{fake.support_channel}/messages/{in_channel}/threads"))
        == 1
    )
    counts = replies_per_message(store.engine, PLATFORM)
    assert counts[str(in_channel)] == 1 and counts[str(in_dm)] == 1


async def test_a_thread_the_dead_process_started_is_used(
    fake: FakeDiscord, engine: Engine, bot: Bot
) -> None:
    store = engine.store
    question = _abandoned(fake, store, fake.support_channel, QUESTION, Placement.NEW_THREAD)
    # It had started the thread (Discord gives it the question's id), then died.
    fake.channels[question] = fake._thread(question, fake.support_channel, "reset", fake.bot_id)
    async with bot():
        await _answers(fake, question)
        await _settled(engine, [question])
    assert fake.find("POST", r"/channels/\d+/messages/\d+/threads") == []
    assert len(fake.bot_messages(question)) == 1


async def test_a_message_the_dead_process_answered_is_not_answered_again(
    fake: FakeDiscord, engine: Engine, bot: Bot
) -> None:
    store = engine.store
    async with bot():
        question = await fake.post_message(fake.support_channel, QUESTION)
        await _answers(fake, question)
        await _settled(engine, [question])
    # As if the process had died after posting, before marking the row done.
    with Session(store.engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(InboxItem)
            .where(col(InboxItem.dedupe_key) == _key(question))
            .values(status="pending", done_at=None, claimed_until=utcnow())
        )
        session.commit()
    async with bot():
        await _wait(lambda: store.inbox_status(PLATFORM, _key(question)) == "done", "done again")
        await engine_idle(fake)
    assert len(fake.bot_messages(question)) == 1
    assert replies_per_message(store.engine, PLATFORM)[str(question)] == 1


async def test_the_same_gateway_message_delivered_twice_is_answered_once(
    fake: FakeDiscord, any_engine: Engine
) -> None:
    store = any_engine.store
    async with running(fake, any_engine):
        payload = fake.message_payload(fake.support_channel, QUESTION)
        question = int(payload["id"])
        fake.messages[question] = payload
        await asyncio.gather(
            fake.dispatch("MESSAGE_CREATE", payload), fake.dispatch("MESSAGE_CREATE", payload)
        )
        await _answers(fake, question)
        await _settled(any_engine, [question])
        await fake.dispatch("MESSAGE_CREATE", payload)  # and once more, later
        await engine_idle(fake)
    assert len(fake.bot_messages(question)) == 1
    assert store.inbox_status(PLATFORM, _key(question)) == "done"
    assert replies_per_message(store.engine, PLATFORM)[str(question)] == 1


@pytest.mark.postgres
async def test_two_processes_sweep_a_dead_one_s_messages_once_each(
    fake: FakeDiscord, pg_engine: Engine, services: Services
) -> None:
    """Two fresh clients, each with its own engine and connections to one PostgreSQL
    database (two processes), sweep at once: each abandoned message is answered once."""
    dms = [fake.add_customer(f"customer{i}") for i in range(6)]
    sent = [
        _abandoned(fake, pg_engine.store, channel, text, Placement.SAME_CHANNEL, author_id=user)
        for (user, channel), text in zip(dms, distinct_questions(len(dms)), strict=True)
    ]
    other_store = Store.from_url(pg_engine.store.engine.url.render_as_string(hide_password=False))
    other = Engine(other_store, services.engine.responder, policies=short_policies())
    try:
        async with AsyncExitStack() as stack:
            await asyncio.gather(
                stack.enter_async_context(running(fake, pg_engine)),
                stack.enter_async_context(running(fake, other)),
            )
            await _settled(pg_engine, sent)
            for _, channel in dms:
                await _answers(fake, channel)
            await asyncio.sleep(0.5)  # a second copy would show up meanwhile
            await _wait(
                lambda: all(
                    pg_engine.store.inbox_status(PLATFORM, _key(m)) == "done" for m in sent
                ),
                "every inbox row done",
            )
    finally:
        other_store.close()
    assert [len(fake.bot_messages(channel)) for _, channel in dms] == [1] * len(dms)
    assert all(pg_engine.store.inbox_status(PLATFORM, _key(m)) == "done" for m in sent)


# Button clicks ---------------------------------------------------------------------------------


def _click_key(interaction_id: int) -> str:
    return f"interaction:{interaction_id}"


async def _asked_and_answered(fake: FakeDiscord, engine: Engine, channel_id: int) -> dict[str, Any]:
    """The bot's answer to a customer's question in `channel_id` (a DM, or a support channel
    without threads: a reply there), recorded as posted, so that its buttons work."""
    before = len(fake.bot_messages(channel_id))
    question = await fake.post_message(channel_id, QUESTION)
    answers = await _answers(fake, channel_id, before + 1)
    await _settled(engine, [question])
    return answers[-1]


def _inbox_rows(store: Store) -> dict[str, InboxItem]:
    with Session(store.engine) as session:
        return {row.dedupe_key: row for row in session.exec(select(InboxItem))}


async def _clicks_done(store: Store, clicks: list[int]) -> None:
    await _wait(
        lambda: all(store.inbox_status(PLATFORM, _click_key(i)) == "done" for i in clicks),
        "the clicks' inbox rows done",
    )


async def test_a_button_turn_is_in_the_inbox_and_marked_done(
    fake: FakeDiscord, engine: Engine, bot: Bot
) -> None:
    store = engine.store
    async with bot(threads=False):
        in_dm = await _asked_and_answered(fake, engine, fake.dm_channel)
        in_channel = await _asked_and_answered(fake, engine, fake.support_channel)
        dm_click = await fake.click(int(in_dm["id"]), HANDOFF_ID)
        channel_click = await fake.click(int(in_channel["id"]), HANDOFF_ID)
        await _answers(fake, fake.dm_channel, 2)
        await _answers(fake, fake.support_channel, 2)
        await _clicks_done(store, [dm_click, channel_click])
    rows = _inbox_rows(store)
    dm_row, channel_row = rows[_click_key(dm_click)], rows[_click_key(channel_click)]
    assert dm_row.payload["message"]["message_id"] == _click_key(dm_click)
    assert dm_row.payload["message"]["text"] == HANDOFF_TEXT
    # In the DM the answer goes in place; in the channel it replies to the message that
    # carried the button, which the click's own id does not name.
    assert dm_row.payload["extra"] == {"placement": "same_channel"}
    assert channel_row.payload["extra"] == {"placement": "reply", "reply_to": in_channel["id"]}
    answer = fake.bot_messages(fake.support_channel)[-1]
    assert answer["message_reference"]["message_id"] == in_channel["id"]
    counts = replies_per_message(store.engine, PLATFORM)
    assert counts[_click_key(dm_click)] == counts[_click_key(channel_click)] == 1


async def test_a_dead_process_s_button_turn_is_answered_once_by_the_next_one(
    fake: FakeDiscord, engine: Engine, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = engine.store

    def dies(point: str) -> None:
        # `bot.faults` ends the process here (`os._exit`); in this process the click's
        # handler ends here instead: accepted, no turn run, nothing posted.
        if point == "after_accept":
            raise asyncio.CancelledError

    async with bot(threads=False):
        in_dm = await _asked_and_answered(fake, engine, fake.dm_channel)
        in_channel = await _asked_and_answered(fake, engine, fake.support_channel)
        with monkeypatch.context() as patch:
            patch.setattr("adapters.discord.client.crash_point", dies)
            clicks = [
                await fake.click(int(in_dm["id"]), HANDOFF_ID),
                await fake.click(int(in_channel["id"]), HANDOFF_ID),
            ]
            await _wait(
                lambda: all(
                    store.inbox_status(PLATFORM, _click_key(i)) == "pending" for i in clicks
                ),
                "both clicks accepted",
            )
            await asyncio.sleep(0.3)  # an answer would show up meanwhile
    # Only the answers carrying the buttons: the clicks were not answered.
    assert (
        len(fake.bot_messages(fake.dm_channel)) == len(fake.bot_messages(fake.support_channel)) == 1
    )
    # The dead process's hold is over.
    with Session(store.engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(InboxItem)
            .where(col(InboxItem.dedupe_key).in_([_click_key(i) for i in clicks]))
            .values(claimed_until=utcnow())
        )
        session.commit()
    async with bot(threads=False):
        await _answers(fake, fake.dm_channel, 2)
        await _answers(fake, fake.support_channel, 2)
        await _clicks_done(store, clicks)
        await asyncio.sleep(0.5)  # a second copy would show up meanwhile
    in_place, as_reply = fake.bot_messages(fake.dm_channel), fake.bot_messages(fake.support_channel)
    assert len(in_place) == len(as_reply) == 2
    assert "message_reference" not in in_place[-1]
    assert as_reply[-1]["message_reference"]["message_id"] == in_channel["id"]
    counts = replies_per_message(store.engine, PLATFORM)
    assert [counts[_click_key(i)] for i in clicks] == [1, 1]


async def test_the_same_click_dispatched_twice_runs_one_turn(
    fake: FakeDiscord,
    any_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = any_engine.store
    caplog.set_level(logging.INFO, logger="adapters.discord")
    caplog.set_level(logging.INFO, logger="bot.engine")
    sent: list[Any] = []
    dispatch = fake.dispatch

    async def keeping(event: str, data: Any) -> None:
        if event == "INTERACTION_CREATE":
            sent.append(data)
        await dispatch(event, data)

    monkeypatch.setattr(fake, "dispatch", keeping)
    async with running(fake, any_engine, threads=False):
        answer = await _asked_and_answered(fake, any_engine, fake.support_channel)
        click = await fake.click(int(answer["id"]), HANDOFF_ID)
        await fake.dispatch("INTERACTION_CREATE", sent[0])  # again at once, while it runs
        await _answers(fake, fake.support_channel, 2)
        await _clicks_done(store, [click])
        await fake.dispatch("INTERACTION_CREATE", sent[0])  # and once more, later
        await engine_idle(fake)
    key = _click_key(click)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if key in m and "already accepted" in m]) == 2
    # No second turn: the engine never saw the click again (it would drop it as a duplicate).
    assert not [m for m in messages if key in m and "duplicate message" in m]
    assert len(fake.bot_messages(fake.support_channel)) == 2
    assert replies_per_message(store.engine, PLATFORM)[key] == 1
