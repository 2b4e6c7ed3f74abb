"""The rasa-sdk action server, in-process on a 127.0.0.1 port, backed by a whole bot."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasa_sdk
import uvicorn

from adapters.rasa import build_app
from bot.handoff import HandoffRequest
from bot.service import Services, build_services
from bot.settings import Settings

DOMAIN: dict[str, Any] = {
    "version": "3.1",
    "intents": ["ask_kb", "request_human", "feedback"],
    "entities": ["supportbot_feedback", "supportbot_feedback_reason"],
    "slots": {
        name: {"type": "text", "influence_conversation": False, "mappings": [{"type": "custom"}]}
        for name in (
            "supportbot_reply_id",
            "supportbot_reply_kind",
            "supportbot_feedback",
            "supportbot_feedback_reason",
        )
    },
    "responses": {},
    "actions": ["action_answer_from_kb", "action_handoff_to_human", "action_record_feedback"],
}


class RecordingSink:
    """A handoff desk that records what it is asked to pick up (a person always will)."""

    def __init__(self) -> None:
        self.requests: list[HandoffRequest] = []

    def request(self, handoff: HandoffRequest) -> None:
        self.requests.append(handoff)


def action_call(
    action: str,
    sender: str,
    text: str | None,
    *,
    slots: dict[str, Any] | None = None,
    intent: str = "ask_kb",
    entities: tuple[dict[str, Any], ...] = (),
    message_id: str | None = None,
) -> dict[str, Any]:
    """A Rasa action request, as Rasa Open Source 3.x sends it to ``POST /webhook``."""
    message_id = message_id or uuid.uuid4().hex
    now = time.time()
    parse_data = {
        "text": text,
        "intent": {"name": intent, "confidence": 0.97},
        "entities": list(entities),
        "message_id": message_id,
    }
    events: list[dict[str, Any]] = [
        {"event": "action", "timestamp": now - 1, "name": "action_listen"},
    ]
    if text is not None:
        events.append(
            {
                "event": "user",
                "timestamp": now,
                "text": text,
                "parse_data": parse_data,
                "input_channel": "rest",
                "message_id": message_id,
            }
        )
    return {
        "next_action": action,
        "sender_id": sender,
        "version": rasa_sdk.__version__,
        "tracker": {
            "sender_id": sender,
            "slots": slots or {},
            "latest_message": parse_data if text is not None else {},
            "events": events,
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
        "domain": DOMAIN,
    }


class ActionServer:
    def __init__(self, services: Services, sink: RecordingSink, url: str) -> None:
        self.services = services
        self.sink = sink
        self.url = url


@pytest.fixture(scope="module")
def action_server(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[ActionServer]:
    data = tmp_path_factory.mktemp("rasa") / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    sink = RecordingSink()
    services = build_services(Settings(data_dir=data), handoff_sink=sink, embedder=embedder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(build_app(services.engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the action server did not start"
        time.sleep(0.02)
    yield ActionServer(services, sink, f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)
    services.store.close()
