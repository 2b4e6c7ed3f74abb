"""The web application over in-process HTTP: the chat page, health, the chat and feedback API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from adapters.web.payloads import MAX_TEXT_CHARS
from bot.app import create_app
from bot.model import ConversationKey, Role
from bot.service import Services
from tests.support import run_python, sample_services

pytestmark = pytest.mark.model

REPLY_KEYS = {"id", "text", "kind", "sources", "actions"}
SOURCE_KEYS = {"id", "title", "url", "score"}
ACTION_KEYS = {"kind", "label", "value"}


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: object
) -> Iterator[Services]:
    with sample_services(tmp_path_factory.mktemp("app"), sample_kb_dir, embedder) as built:
        yield built


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


def chat(client: TestClient, text: str, conversation: str | None = None, **extra: Any) -> Any:
    body = {"conversation_id": conversation or uuid.uuid4().hex, "user": "ann", "text": text}
    response = client.post("/api/chat", json={**body, **extra})
    assert response.status_code == 200, response.text
    return response.json()


# Page and health -------------------------------------------------------------------------------


def test_index_is_the_chat_page(client: TestClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    soup = BeautifulSoup(response.text, "html.parser")
    assert soup.find("html") is not None
    assert soup.title is not None and soup.title.string
    assert soup.find("textarea") is not None
    assert "/api/chat" in response.text
    assert "/api/feedback" in response.text


def test_index_loads_nothing_from_other_hosts(client: TestClient) -> None:
    soup = BeautifulSoup(client.get("/").text, "html.parser")

    external = [
        f"<{tag.name} {attribute}={tag[attribute]!r}>"
        for tag in soup.find_all(True)
        for attribute in ("src", "href")
        if tag.has_attr(attribute)
        and str(tag[attribute]).strip().lower().startswith(("http://", "https://", "//"))
    ]
    assert external == []
    for style in soup.find_all("style"):
        assert "@import" not in style.text
        assert "url(http" not in style.text.replace(" ", "")


def test_healthz(client: TestClient, services: Services) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["entries"] == len(services.kb.entries)
    assert body["entries"] >= 57  # the sample FAQ alone has 57 entries; articles add passages
    assert 0.0 <= body["threshold"] <= 1.0
    assert body["threshold"] == services.engine.responder.confidence.threshold


# POST /api/chat --------------------------------------------------------------------------------


def test_chat_answer_has_the_documented_shape(client: TestClient, services: Services) -> None:
    body = chat(client, "How do I reset my password?")

    assert set(body) == {"replies", "owner"}
    assert body["owner"] == "bot"
    assert len(body["replies"]) == 1
    reply = body["replies"][0]
    assert set(reply) == REPLY_KEYS
    assert reply["kind"] == "answer"
    assert isinstance(reply["text"], str) and reply["text"]
    assert reply["sources"]
    for source in reply["sources"]:
        assert set(source) == SOURCE_KEYS
        assert isinstance(source["id"], str)
        assert isinstance(source["title"], str | None)
        assert isinstance(source["url"], str | None)
        assert isinstance(source["score"], float)
    assert reply["sources"][0]["id"] == "reset-password"
    assert reply["sources"][0]["title"] == "Reset your password"
    assert 0.0 < reply["sources"][0]["score"] <= 1.0
    for action in reply["actions"]:
        assert set(action) == ACTION_KEYS
    assert {a["kind"] for a in reply["actions"]} >= {"feedback_up", "feedback_down", "handoff"}

    stored = services.store.get_reply(reply["id"])
    assert stored is not None
    assert stored.text == reply["text"]
    assert [s.id for s in stored.sources] == [s["id"] for s in reply["sources"]]


def test_chat_smalltalk_and_fallback_shapes(client: TestClient) -> None:
    hello = chat(client, "hello")["replies"][0]
    weather = chat(client, "What's the weather in Paris tomorrow?")["replies"][0]

    assert set(hello) == REPLY_KEYS
    assert (hello["kind"], hello["sources"], hello["actions"]) == ("smalltalk", [], [])
    assert set(weather) == REPLY_KEYS
    assert weather["kind"] in ("fallback", "clarify")
    if weather["kind"] == "fallback":
        assert weather["sources"] == []
        assert [a["kind"] for a in weather["actions"]] == ["handoff"]


def test_chat_text_at_the_limit_gets_a_polite_reply(client: TestClient) -> None:
    reply = chat(client, "a" * MAX_TEXT_CHARS)["replies"][0]

    assert reply["kind"] == "fallback"
    assert "too long" in reply["text"]


VALID = {"conversation_id": "c-validation", "user": "ann", "text": "How do I reset my password?"}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


INVALID_BODIES = [
    pytest.param(json.dumps(without("text")), id="missing-text"),
    pytest.param(json.dumps(without("conversation_id")), id="missing-conversation"),
    pytest.param(json.dumps(without("user")), id="missing-user"),
    pytest.param(json.dumps({**VALID, "text": 42}), id="text-number"),
    pytest.param(json.dumps({**VALID, "text": ["hi"]}), id="text-list"),
    pytest.param(json.dumps({**VALID, "text": None}), id="text-null"),
    pytest.param(json.dumps({**VALID, "conversation_id": 7}), id="conversation-number"),
    pytest.param(json.dumps({**VALID, "conversation_id": ""}), id="conversation-empty"),
    pytest.param(json.dumps({**VALID, "conversation_id": "   "}), id="conversation-blank"),
    pytest.param(json.dumps({**VALID, "user": {"id": 1}}), id="user-object"),
    pytest.param(json.dumps({**VALID, "message_id": 123}), id="message-id-number"),
    pytest.param(json.dumps({**VALID, "message_id": "m" * 201}), id="message-id-too-long"),
    pytest.param(json.dumps({**VALID, "text": "x" * (MAX_TEXT_CHARS + 1)}), id="text-too-long"),
    pytest.param(json.dumps([VALID]), id="array"),
    pytest.param("null", id="json-null"),
    pytest.param("not json at all", id="not-json"),
    pytest.param('{"conversation_id": "c", "user": "ann", "text": "hi"', id="truncated-json"),
    pytest.param("", id="empty-body"),
]


@pytest.mark.parametrize("body", INVALID_BODIES)
def test_chat_rejects_invalid_requests_and_stores_nothing(
    client: TestClient, services: Services, body: str
) -> None:
    before = services.store.counts()

    response = client.post(
        "/api/chat", content=body.encode(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert services.store.counts() == before


def test_validation_error_does_not_echo_huge_input(client: TestClient) -> None:
    response = client.post("/api/chat", json={**VALID, "text": "y" * (MAX_TEXT_CHARS + 1)})

    assert response.status_code == 422
    assert "yyyy" not in response.text
    assert len(response.content) < 1000
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_chat_rejects_a_non_json_content_type(client: TestClient, services: Services) -> None:
    before = services.store.counts()

    response = client.post(
        "/api/chat", content=json.dumps(VALID).encode(), headers={"content-type": "text/plain"}
    )

    assert response.status_code == 422
    assert services.store.counts() == before


def test_chat_retry_with_the_same_message_id_is_answered_once(
    client: TestClient, services: Services
) -> None:
    conversation, message_id = uuid.uuid4().hex, uuid.uuid4().hex
    before = services.store.counts()

    first = chat(client, "How do I delete my account?", conversation, message_id=message_id)
    second = chat(client, "How do I delete my account?", conversation, message_id=message_id)

    assert len(first["replies"]) == 1
    # The retry gets the stored reply back (the first answer may never have reached the
    # client), not a second answer.
    assert second == first
    after = services.store.counts()
    assert after["reply"] - before["reply"] == 1
    assert after["message"] - before["message"] == 2
    info = services.store.get_or_create_conversation(ConversationKey("web", "", conversation), "?")
    assert [t.role for t in services.store.history(info.id)] == [Role.USER, Role.BOT]


def test_chat_without_message_id_answers_every_post(client: TestClient) -> None:
    conversation = uuid.uuid4().hex

    first = chat(client, "hello", conversation)
    second = chat(client, "hello", conversation)

    assert len(first["replies"]) == len(second["replies"]) == 1
    assert first["replies"][0]["id"] != second["replies"][0]["id"]


# POST /api/feedback ----------------------------------------------------------------------------


def rate(client: TestClient, reply_id: str, value: str | None, user: str = "ann") -> Any:
    return client.post("/api/feedback", json={"reply_id": reply_id, "user": user, "value": value})


def test_feedback_is_recorded_once(client: TestClient, services: Services) -> None:
    reply_id = chat(client, "How do I reset my password?")["replies"][0]["id"]

    first = rate(client, reply_id, "up")
    repeat = rate(client, reply_id, "up")

    assert (first.status_code, first.json()) == (200, {"recorded": True, "replies": []})
    assert (repeat.status_code, repeat.json()) == (200, {"recorded": False, "replies": []})
    assert services.store.feedback_for(reply_id) == {"up": 1, "down": 0}

    assert rate(client, reply_id, "down").json()["recorded"] is True
    assert services.store.feedback_for(reply_id) == {"up": 0, "down": 1}
    assert rate(client, reply_id, None).json() == {"recorded": True, "replies": []}
    assert rate(client, reply_id, None).json() == {"recorded": False, "replies": []}
    assert services.store.feedback_for(reply_id) == {"up": 0, "down": 0}


def test_feedback_with_a_reason(client: TestClient, services: Services) -> None:
    reply_id = chat(client, "How do I reset my password?")["replies"][0]["id"]

    response = client.post(
        "/api/feedback",
        json={"reply_id": reply_id, "user": "bob", "value": "down", "reason": "outdated"},
    )

    assert response.json() == {"recorded": True, "replies": []}
    assert services.store.feedback_for(reply_id) == {"up": 0, "down": 1}


def test_feedback_on_an_unknown_reply_is_404(client: TestClient, services: Services) -> None:
    before = services.store.counts()["feedback"]

    response = rate(client, "no-such-reply", "up")

    assert response.status_code == 404
    assert "no-such-reply" in response.json()["detail"]
    assert services.store.counts()["feedback"] == before


@pytest.mark.parametrize(
    "body",
    [
        {"reply_id": "r", "user": "ann", "value": "meh"},
        {"reply_id": "r", "user": "ann"},
        {"reply_id": "", "user": "ann", "value": "up"},
        {"user": "ann", "value": "up"},
        {"reply_id": "r", "value": "up"},
    ],
    ids=["bad-value", "missing-value", "empty-reply-id", "missing-reply-id", "missing-user"],
)
def test_feedback_validation(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post("/api/feedback", json=body).status_code == 422


def test_a_worker_without_slack_or_zendesk_never_imports_their_sdks() -> None:
    """Each adapter's entry point reads its settings first and imports its SDK only when the
    platform is configured (`adapters.slack.plugin`, `adapters.zendesk.plugin`): slack-bolt and
    zenpy took 0.6 s of every worker's start-up."""
    import os

    script = """
import sys
from fastapi import FastAPI
from bot.app import adapter_mounts
mounted = {name: mount(FastAPI(), None) for name, mount in adapter_mounts().items()}
assert mounted == {"slack": None, "zendesk": None}, mounted
print(sorted(m for m in ("slack_bolt", "slack_sdk", "zenpy") if m in sys.modules))
"""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "ZENDESK_", "SUPPORTBOT_SLACK", "SUPPORTBOT_ZENDESK"))
    }
    done = run_python(script, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
