"""The live bot over the web app: 👎 reasons, /metrics, and logs that name the conversation and
never the customer's words."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from bot.app import create_app
from bot.engine import PERSON_REQUEST_TEXT
from bot.model import ConversationKey, FeedbackReason, InboundMessage
from bot.service import Services
from bot.storage.tables import Feedback
from monitoring.telemetry import (
    CHATTY_LOGGERS,
    ConversationFilter,
    _json_formatter,
    configure_logging,
)
from tests.support import sample_services

pytestmark = pytest.mark.model

#: A customer message with a secret in it: neither may reach the INFO logs.
SECRET = "xoxb-1234-SECRETTOKEN"
CUSTOMER_TEXT = f"How do I reset my password? my token is {SECRET}"


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(tmp_path_factory.mktemp("live"), sample_kb_dir, embedder) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


def _chat(client: TestClient, conversation: str, text: str) -> dict[str, Any]:
    body = {"conversation_id": conversation, "user": "ann", "text": text}
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    [reply] = response.json()["replies"]
    return dict(reply)


def _feedback(client: TestClient, reply_id: str, **extra: Any) -> dict[str, Any]:
    body = {"reply_id": reply_id, "user": "ann", **extra}
    response = client.post("/api/feedback", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _reasons(services: Services, reply_id: str) -> list[str | None]:
    with Session(services.store.engine) as session:
        rows = session.exec(select(Feedback).where(Feedback.reply_id == reply_id)).all()
        return [row.reason for row in rows]


# 👎 reasons on the web -------------------------------------------------------------------------


def test_a_thumbs_down_offers_the_reasons_and_stores_the_choice(
    client: TestClient, services: Services
) -> None:
    reply = _chat(client, uuid.uuid4().hex, "How do I reset my password?")
    assert reply["kind"] == "answer"

    down = _feedback(client, reply["id"], value="down")
    assert down["recorded"] is True
    [reasons] = down["replies"]
    assert reasons["id"] == reply["id"]  # the buttons name the rated reply
    assert [(a["kind"], a["value"]) for a in reasons["actions"]] == [
        ("feedback_reason", reason.value) for reason in FeedbackReason
    ]
    assert _reasons(services, reply["id"]) == [None]

    chosen = _feedback(client, reply["id"], value="down", reason="not_what_i_asked")
    assert chosen == {"recorded": True, "replies": []}
    assert _reasons(services, reply["id"]) == ["not_what_i_asked"]
    # A 👍 offers nothing.
    other = _chat(client, uuid.uuid4().hex, "How do I export a note to PDF?")
    assert _feedback(client, other["id"], value="up")["replies"] == []


def test_the_reason_talk_to_a_person_hands_over(client: TestClient, services: Services) -> None:
    conversation = uuid.uuid4().hex
    reply = _chat(client, conversation, "How do I reset my password?")
    _feedback(client, reply["id"], value="down")

    response = _feedback(client, reply["id"], value="down", reason="talk_to_person")

    [handoff] = response["replies"]
    assert handoff["kind"] == "handoff"
    # No desk is configured here: the customer gets the contact and the bot keeps it.
    info = services.store.find_conversation(ConversationKey("web", "", conversation))
    assert info is not None
    texts = [turn.text for turn in services.store.history(info.id)]
    assert PERSON_REQUEST_TEXT in texts
    assert _reasons(services, reply["id"]) == ["talk_to_person"]


# /metrics --------------------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_metrics_count_replies_feedback_and_latency(client: TestClient) -> None:
    before = _samples(client.get("/metrics").text)
    assert before.get('supportbot_replies_total{kind="answer"}', 0.0) == 0.0

    reply = _chat(client, uuid.uuid4().hex, "How do I reset my password?")
    _feedback(client, reply["id"], value="up")
    _chat(client, uuid.uuid4().hex, "I want to talk to a human")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)
    assert after['supportbot_replies_total{kind="answer"}'] == 1.0
    assert after['supportbot_replies_total{kind="handoff"}'] == 1.0
    assert after["supportbot_handoffs_total"] == 1.0
    assert after['supportbot_feedback_total{value="up"}'] == 1.0
    assert after["supportbot_reply_latency_seconds_count"] == 2.0
    assert after['supportbot_reply_latency_seconds_bucket{le="+Inf"}'] == 2.0


# Logs ------------------------------------------------------------------------------------------


def test_a_turns_info_logs_name_the_conversation_and_not_the_customers_words(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ConversationFilter())
    channel = uuid.uuid4().hex
    message = InboundMessage("web", "", channel, "ann", uuid.uuid4().hex, CUSTOMER_TEXT)
    with caplog.at_level(logging.INFO):
        [reply] = services.engine.handle(message)
    conversation = services.store.find_conversation(message.conversation)
    assert conversation is not None

    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert records, "a turn logs at INFO"
    formatter = _json_formatter()
    for record in records:
        assert record.conversation == str(message.conversation)  # type: ignore[attr-defined]
        line = json.loads(formatter.format(record))
        assert line["conversation_id"] == conversation.id
        text = formatter.format(record)
        assert SECRET not in text and "reset my password" not in text
    # Outside a turn, records carry no conversation.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        logging.getLogger("supportbot.test").info("between turns")
    assert caplog.records[-1].conversation_id is None  # type: ignore[attr-defined]
    assert reply.id


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger and the chatty libraries' loggers back as they were after the test
    (`configure_logging` changes them)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_configure_logging_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", stream=sys.stdout)
    logging.getLogger("supportbot.test").info("hello %s", "world")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["level"] == "INFO"
    assert "conversation_id" in line
    configure_logging("text", stream=sys.stdout)
    logging.getLogger("supportbot.test").info("plain")
    assert capsys.readouterr().out.strip().endswith("supportbot.test: plain")
    with pytest.raises(ValueError, match="text"):
        configure_logging("xml")  # type: ignore[arg-type]
    # FAISS's loader notes, which read like errors, and the ONNX optimizer's narration,
    # only when debugging.
    logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
    logging.getLogger("fusion_base").info("Fused SkipLayerNormalization: 12")
    # A library that sets its own logger to DEBUG (bm25s does) is still held to INFO.
    chatty = logging.getLogger("supportbot.test.chatty")
    chatty.setLevel(logging.DEBUG)
    chatty.debug("Building index from token IDs")
    assert capsys.readouterr().out == ""
    configure_logging("text", stream=sys.stdout, level=logging.DEBUG)
    logging.getLogger("faiss.loader").info("Loading faiss.")
    assert capsys.readouterr().out.strip().endswith("faiss.loader: Loading faiss.")


@pytest.mark.usefixtures("root_logging")
def test_a_first_start_logs_each_migration_and_not_alembic_s_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.storage import db

    configure_logging("text", stream=sys.stdout)
    db.migrate(f"sqlite:///{tmp_path / 'fresh.db'}")
    out = capsys.readouterr().out
    assert "Running upgrade  -> 0001" in out
    assert "setup plugin" not in out


#: Run in a child process: counts replies as a worker with a shared metrics folder would.
_WORKER = """
from monitoring.telemetry import PrometheusTelemetry
telemetry = PrometheusTelemetry()
for kind, latency_ms in {replies}:
    telemetry.replied(kind, latency_ms)
telemetry.handed_over()
"""


def test_metrics_of_several_workers_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (set by `run --workers N`) any worker serves the sums."""
    from monitoring.telemetry import MULTIPROC_DIR_ENV, PrometheusTelemetry

    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {**os.environ, MULTIPROC_DIR_ENV: str(shared)}
    for replies in ([("answer", 20.0), ("answer", 30.0)], [("answer", 5.0), ("fallback", 9.0)]):
        code = _WORKER.format(replies=replies)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)

    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(shared))
    body, _ = PrometheusTelemetry().exposition()
    summed = _samples(body.decode())
    assert summed['supportbot_replies_total{kind="answer"}'] == 3.0
    assert summed['supportbot_replies_total{kind="fallback"}'] == 1.0
    assert summed["supportbot_handoffs_total"] == 2.0
    assert summed["supportbot_reply_latency_seconds_count"] == 4.0
    # Without the folder a process reports only its own counts.
    monkeypatch.delenv(MULTIPROC_DIR_ENV)
    alone = _samples(PrometheusTelemetry().exposition()[0].decode())
    assert alone.get('supportbot_replies_total{kind="answer"}', 0.0) == 0.0
