"""The bot keeps answering across real PostgreSQL restarts (``pg_ctl restart -m fast`` and
``-m immediate``) in the middle of traffic.

The real web app (`create_app`, uvicorn on 127.0.0.1) runs on a private PostgreSQL server
(`tests.pg_instance`). Customers post one question after another to ``/api/chat``, each with its
own ``message_id``, and send it again (same id) whenever the answer is not a stored reply: an
HTTP error, a dropped connection, or the bot's "please try again" while the database is away,
as the web page does. Meanwhile the server is restarted twice. Afterwards every message is stored
once, in the order sent, and has exactly one reply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlmodel import Session, col, select

from bot.app import create_app
from bot.engine import Engine, Responder
from bot.model import Role
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from bot.storage.tables import Conversation, Message
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.exactly_once import distinct_questions, replies_per_message, unanswered_or_twice
from tests.pg_instance import PrivatePostgres, private_postgres  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.model]

CUSTOMERS = 4
MESSAGES_EACH = 8
#: How long one message may take to be answered, restarts included.
ANSWER_WITHIN_S = 90.0


@pytest.fixture
def serving(
    private_postgres: PrivatePostgres,  # noqa: F811
    sample_kb: KnowledgeBase,
    tmp_path: Path,
) -> Iterator[tuple[str, Store]]:
    """The web app on uvicorn (in a thread) with its store on a fresh database of the server."""
    name = f"restart_{time.monotonic_ns()}"
    with psycopg.connect(
        private_postgres.url().replace("+psycopg", ""), autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    store = Store.from_url(private_postgres.url(name))
    retriever = Retriever(sample_kb)
    engine = Engine(store, Responder(retriever, confidence_model(sample_kb)))
    services = Services(Settings(data_dir=tmp_path), store, sample_kb, retriever, engine)
    app = create_app(services, adapters={})
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-restart-test")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(30)
        store.close()


class Customer(threading.Thread):
    """Posts its questions one after another, each until a stored reply comes back."""

    def __init__(self, base_url: str, number: int, questions: list[str]) -> None:
        super().__init__(name=f"customer-{number}")
        self.base_url = base_url
        self.conversation = f"restart-{number}"
        self.questions = questions
        self.sent: list[str] = []
        self.failures: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=30) as http:
                for index, text in enumerate(self.questions):
                    message_id = f"{self.conversation}-m{index}"
                    self.sent.append(message_id)
                    self._until_answered(http, message_id, text)
        except BaseException as e:  # reported by the test
            self.error = e

    def _until_answered(self, http: httpx.Client, message_id: str, text: str) -> None:
        body: dict[str, Any] = {
            "conversation_id": self.conversation,
            "user": self.conversation,
            "text": text,
            "message_id": message_id,
        }
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while time.monotonic() < deadline:
            try:
                response = http.post("/api/chat", json=body)
            except httpx.TransportError as e:
                self.failures.append(f"{message_id}: {e!r}")
            else:
                replies = response.json().get("replies") if response.is_success else None
                if replies and all(reply["id"] for reply in replies):
                    return  # stored replies: answered
                self.failures.append(f"{message_id}: {response.status_code} {replies}")
            time.sleep(0.2)
        raise AssertionError(f"{message_id} not answered within {ANSWER_WITHIN_S}s")


def _answered(customers: list[Customer]) -> int:
    return sum(max(0, len(c.sent) - 1) for c in customers)


def _wait_for_traffic(customers: list[Customer], at_least: int) -> None:
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while _answered(customers) < at_least:
        assert time.monotonic() < deadline, "the customers stopped getting answers"
        assert all(c.is_alive() or c.error is None for c in customers)
        time.sleep(0.05)


def test_answers_continue_across_postgres_restarts(
    private_postgres: PrivatePostgres,  # noqa: F811
    serving: tuple[str, Store],
) -> None:
    base_url, store = serving
    questions = distinct_questions(CUSTOMERS * MESSAGES_EACH)
    customers = [
        Customer(base_url, n, questions[n * MESSAGES_EACH : (n + 1) * MESSAGES_EACH])
        for n in range(CUSTOMERS)
    ]
    for customer in customers:
        customer.start()
    total = CUSTOMERS * MESSAGES_EACH
    _wait_for_traffic(customers, total // 4)
    private_postgres.restart("fast")
    _wait_for_traffic(customers, total // 2)
    private_postgres.restart("immediate")  # a crash: no clean shutdown, recovery from WAL
    for customer in customers:
        customer.join(ANSWER_WITHIN_S * MESSAGES_EACH)
    for customer in customers:
        assert customer.error is None, f"{customer.name}: {customer.error!r}"
        assert len(customer.sent) == MESSAGES_EACH

    sent = [message_id for customer in customers for message_id in customer.sent]
    counts = replies_per_message(store.engine, "web")
    assert unanswered_or_twice(counts, sent) == {}
    assert len(counts) == len(sent), "a message was stored twice (or one nobody sent)"
    # Nothing out of order: each conversation holds its messages in the order they were sent.
    with Session(store.engine) as session:
        for customer in customers:
            stored = session.exec(
                select(Message.platform_message_id)
                .join(Conversation, col(Message.conversation_id) == col(Conversation.id))
                .where(
                    Conversation.channel == customer.conversation,
                    Message.role == Role.USER.value,
                )
                .order_by(col(Message.id))
            ).all()
            assert list(stored) == customer.sent
