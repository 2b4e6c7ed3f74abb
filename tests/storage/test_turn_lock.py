"""One turn of a conversation at a time: `Store.conversation_lock`, and the engine under it.

On PostgreSQL two `Store` instances stand for two worker processes (each has its own
process-local locks, so only the advisory lock keeps them apart); a holder killed with SIGKILL
must not leave the conversation locked. The engine test runs two engines on one PostgreSQL
database, in two threads, with interleaved and repeated messages for one conversation.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from bot.errors import StorageError
from bot.model import ConversationKey, InboundMessage, Reply, Role
from bot.service import Services, build_services
from bot.settings import Settings
from bot.storage.store import Store
from bot.storage.tables import Message, ReplyRecord


def _holds_for(store: Store, key: str, seconds: float, started: threading.Event) -> None:
    with store.conversation_lock(key):
        started.set()
        time.sleep(seconds)


def _acquire_time(store: Store, key: str, *, timeout_s: float = 30.0) -> float:
    with store.conversation_lock(key, timeout_s=timeout_s):
        return time.monotonic()


@pytest.fixture
def second_store(db_url: str, store: Store) -> Iterator[Store]:
    """Another store on the same database (another worker process, as far as locks go)."""
    other = Store.from_url(db_url, migrate=False)
    try:
        yield other
    finally:
        other.close()


def test_a_second_turn_waits_for_the_first(store: Store, second_store: Store) -> None:
    # On SQLite both stores in one process share nothing: use the same store there (the
    # process-local lock is what serializes SQLite turns).
    other = second_store if store.engine.dialect.name == "postgresql" else store
    started = threading.Event()
    holder = threading.Thread(target=_holds_for, args=(store, "web::c1", 0.6, started))
    holder.start()
    assert started.wait(10)
    began = time.monotonic()
    got = _acquire_time(other, "web::c1")
    holder.join()
    assert got - began >= 0.4, "the second turn did not wait for the first"


def test_other_conversations_do_not_wait(store: Store, second_store: Store) -> None:
    other = second_store if store.engine.dialect.name == "postgresql" else store
    started = threading.Event()
    holder = threading.Thread(target=_holds_for, args=(store, "web::busy", 1.5, started))
    holder.start()
    assert started.wait(10)
    began = time.monotonic()
    got = _acquire_time(other, "web::free")
    holder.join()
    assert got - began < 1.0


def test_waiting_too_long_is_a_clear_error(store: Store, second_store: Store) -> None:
    other = second_store if store.engine.dialect.name == "postgresql" else store
    started = threading.Event()
    holder = threading.Thread(target=_holds_for, args=(store, "web::slow", 2.0, started))
    holder.start()
    assert started.wait(10)
    with pytest.raises(StorageError, match="stayed busy"):
        _acquire_time(other, "web::slow", timeout_s=0.3)
    holder.join()
    # Free again afterwards, and the store still works.
    _acquire_time(other, "web::slow", timeout_s=5)


def test_the_lock_is_reentrant_in_one_thread(store: Store) -> None:
    with store.conversation_lock("web::nested"), store.conversation_lock("web::nested"):
        pass
    # Released completely: another thread gets it at once.
    box: list[float] = []
    thread = threading.Thread(
        target=lambda: box.append(_acquire_time(store, "web::nested", timeout_s=2))
    )
    thread.start()
    thread.join()
    assert box


def test_an_error_inside_releases_the_lock(store: Store, second_store: Store) -> None:
    other = second_store if store.engine.dialect.name == "postgresql" else store
    with pytest.raises(RuntimeError), store.conversation_lock("web::boom"):
        raise RuntimeError("the turn failed")
    _acquire_time(other, "web::boom", timeout_s=2)


HOLDER = """
import sys, time
from bot.storage.store import Store
store = Store.from_url(sys.argv[1], migrate=False)
with store.conversation_lock("web::killed"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.mark.postgres
def test_a_killed_worker_leaves_no_lock_behind(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(StorageError, match="another worker"):
            _acquire_time(store, "web::killed", timeout_s=0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        # The server drops a dead backend's locks as soon as it notices the closed socket.
        _acquire_time(store, "web::killed", timeout_s=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        store.close()


# Two engines on one PostgreSQL database ------------------------------------------------------

QUESTIONS = (
    "How do I reset my password?",
    "How much does the Plus plan cost?",
    "How do I delete my Lumen Notes account?",
    "Which payment methods do you accept?",
    "How do I turn on two-factor authentication?",
    "Where can I find my invoices?",
    "Do you offer a student discount?",
    "How do I cancel my subscription?",
)


def _engines(data: Path, url: str, embedder: object) -> list[Services]:
    built = []
    for _ in range(2):
        services = build_services(Settings(data_dir=data, database_url=url), embedder=embedder)
        built.append(services)
    return built


@pytest.mark.postgres
@pytest.mark.model
def test_two_engines_answer_one_conversation_in_order(
    postgres_url: str, sample_kb_dir: Path, embedder: object, tmp_path: Path
) -> None:
    shutil.copytree(sample_kb_dir, tmp_path / "data" / "index")
    workers = _engines(tmp_path / "data", postgres_url, embedder)
    channel = f"c-{uuid.uuid4().hex[:8]}"
    messages = [
        InboundMessage(
            platform="web",
            workspace="",
            channel=channel,
            user="u-1",
            message_id=f"m{i}",
            text=text,
            addressed=True,
        )
        for i, text in enumerate(QUESTIONS)
    ]
    # Worker 0 gets the even messages, worker 1 the odd ones; then each retries the other's
    # (a platform's redelivery landing on another worker).
    plans = [
        messages[0::2] + messages[1::2],
        messages[1::2] + messages[0::2],
    ]
    returned: list[list[Reply]] = [[], []]
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        barrier.wait()
        for message in plans[index]:
            returned[index].extend(workers[index].engine.handle(message))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert sum(len(r) for r in returned) == len(QUESTIONS), "one reply per message, none twice"
        store = workers[0].store
        conversation = store.find_conversation(ConversationKey("web", "", channel))
        assert conversation is not None
        with Session(store.engine) as session:
            rows = session.exec(
                select(Message)
                .where(Message.conversation_id == conversation.id)
                .order_by(col(Message.id))
            ).all()
            replies = session.exec(
                select(ReplyRecord).where(ReplyRecord.conversation_id == conversation.id)
            ).all()
        # Turns in order: each customer message is followed by its own reply, never by the
        # next customer message (that would be two turns running at once).
        roles = [Role(row.role) for row in rows]
        assert roles == [Role.USER, Role.BOT] * len(QUESTIONS)
        users = [row for row in rows if row.role == Role.USER.value]
        assert sorted(row.platform_message_id or "" for row in users) == sorted(
            m.message_id for m in messages
        )
        answered = {reply.message_id for reply in replies}
        assert len(replies) == len(QUESTIONS)
        assert answered == {row.id for row in users}
        for user_row, bot_row in zip(rows[0::2], rows[1::2], strict=True):
            reply = next(r for r in replies if r.message_id == user_row.id)
            assert reply.text == bot_row.text
    finally:
        for services in workers:
            services.store.close()
