"""Fixtures for the Zendesk adapter: a local Zendesk, the real web app, signed webhook requests.

Every test gets its own SQLite database; the sample knowledge base and the embedding model are
loaded once per session. The web app is the project's own `create_app` with the Zendesk adapter
mounted through its entry-point function, driven by Starlette's `TestClient` (lifespan included);
the adapter's API client points at the emulator.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.zendesk import ZendeskAdapter, ZendeskSettings, mount
from bot.app import create_app
from bot.engine import Engine, Responder
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.adapters.zendesk.emulator import (
    AGENT_ID,
    BOT_USER_ID,
    CUSTOMER_ID,
    EMAIL,
    TOKEN,
    ZendeskEmulator,
)

PAYLOADS = Path(__file__).parent / "payloads"
SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
SUBDOMAIN = "acme"
GROUP_ID = 360001
TICKET = 4242

__all__ = [
    "AGENT_ID",
    "BOT_USER_ID",
    "CUSTOMER_ID",
    "Harness",
    "comment_event",
    "payload",
    "signed_headers",
]


def payload(name: str) -> dict[str, Any]:
    """A recorded webhook body from ``payloads/``, as a fresh dict to change freely."""
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text("utf-8"))
    return copy.deepcopy(data)


def comment_event(
    *,
    ticket_id: int = TICKET,
    comment_id: int,
    body: str,
    author_id: int = CUSTOMER_ID,
    is_staff: bool = False,
    public: bool = True,
    external_id: str | None = None,
) -> dict[str, Any]:
    """A ``ticket.comment_added`` event for a comment after the ticket's first one."""
    event = payload("comment_added_customer")
    event["id"] = f"evt-{ticket_id}-{comment_id}"
    event["subject"] = f"zen:ticket:{ticket_id}"
    event["detail"].update(
        id=str(ticket_id), updated_at="2026-01-08T11:00:00Z", external_id=external_id
    )
    event["event"]["comment"] = {
        "id": comment_id,
        "body": body,
        "is_public": public,
        "author": {"id": author_id, "is_staff": is_staff, "name": f"user {author_id}"},
    }
    return event


def signed_headers(
    body: bytes, *, secret: str = SECRET, timestamp: str | None = None
) -> dict[str, str]:
    """What Zendesk sends: base64(HMAC-SHA256(secret, timestamp + body)) and the timestamp."""
    stamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Id": "01F1KRFQ6BG29CNWFR60NK5FNY",
    }


def make_settings(emulator: ZendeskEmulator, **overrides: Any) -> ZendeskSettings:
    values: dict[str, Any] = {
        "subdomain": SUBDOMAIN,
        "email": EMAIL,
        "api_token": TOKEN,
        "webhook_secret": SECRET,
        "bot_user_id": BOT_USER_ID,
        "api_url": emulator.api_url,
        "handoff_group_id": GROUP_ID,
        "satisfaction_poll_s": 0,
        "http_timeout": 5.0,
    }
    values.update(overrides)
    return ZendeskSettings(**values)


@pytest.fixture(scope="session")
def zendesk_kb(sample_kb_dir: Path, embedder: Any) -> KnowledgeBase:
    return KnowledgeBase(sample_kb_dir, embedder).load()


def build_services(db: Path, kb: KnowledgeBase, responder: Responder | None = None) -> Services:
    store = Store.from_url(f"sqlite:///{db}")
    retriever = Retriever(kb)
    engine = Engine(store, responder or Responder(retriever, confidence_model(kb)))
    return Services(Settings(data_dir=db.parent), store, kb, retriever, engine)


@pytest.fixture
def services(tmp_path: Path, zendesk_kb: KnowledgeBase) -> Iterator[Services]:
    built = build_services(tmp_path / "zendesk.db", zendesk_kb)
    try:
        yield built
    finally:
        built.store.close()


@pytest.fixture
def emulator() -> Iterator[ZendeskEmulator]:
    zendesk = ZendeskEmulator()
    zendesk.start()
    try:
        yield zendesk
    finally:
        zendesk.stop()


@pytest.fixture
def zendesk_settings(emulator: ZendeskEmulator) -> ZendeskSettings:
    return make_settings(emulator)


@dataclass
class Harness:
    """The running web app with the Zendesk adapter, and ways to talk to it as Zendesk does."""

    http: TestClient
    adapter: ZendeskAdapter
    emulator: ZendeskEmulator
    services: Services

    def send(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        timestamp: str | None = None,
        signed: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """POST a webhook request to /zendesk/webhook, signed unless told otherwise."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if signed:
            sent.update(signed_headers(raw, secret=secret, timestamp=timestamp))
        sent.update(headers or {})
        return self.http.post("/zendesk/webhook", content=raw, headers=sent)

    def counts(self) -> dict[str, int]:
        return self.services.store.counts()

    def run(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an adapter coroutine function on the app's event loop (where its HTTP client
        lives), from the test's thread."""
        portal = self.http.portal
        assert portal is not None
        return portal.call(lambda: function(*args, **kwargs))


def serve(services: Services, settings: ZendeskSettings, emulator: ZendeskEmulator) -> Harness:
    app = create_app(
        services, adapters={"zendesk": lambda app, svc: mount(app, svc, settings=settings)}
    )
    client = TestClient(app)
    client.__enter__()
    return Harness(client, app.state.zendesk, emulator, services)


@pytest.fixture
def zendesk(
    services: Services, zendesk_settings: ZendeskSettings, emulator: ZendeskEmulator
) -> Iterator[Harness]:
    emulator.add_ticket(
        TICKET, description=payload("comment_added_customer")["detail"]["description"]
    )
    harness = serve(services, zendesk_settings, emulator)
    try:
        yield harness
    finally:
        harness.http.__exit__(None, None, None)
