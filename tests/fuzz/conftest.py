"""The fuzzing suite's app: every route mounted (web chat, dashboard, metrics, Slack, Zendesk),
a real SQLite database and the sample knowledge base; bounded hypothesis settings.

The ``fuzz`` hypothesis profile keeps the whole suite well under 90 s on two cores:
``SUPPORTBOT_FUZZ_LONG=1`` runs many more examples.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from adapters.slack import SlackAdapter, SlackSettings
from adapters.zendesk import ZendeskSettings
from adapters.zendesk import mount as mount_zendesk
from bot.app import create_app
from bot.engine import Engine, Responder
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.adapters.slack.emulator import SlackEmulator
from tests.adapters.zendesk.emulator import BOT_USER_ID, EMAIL, TOKEN, ZendeskEmulator

_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "fuzz", max_examples=40, deadline=None, suppress_health_check=_CHECKS, derandomize=True
)
settings.register_profile(
    "fuzz-long", max_examples=300, deadline=None, suppress_health_check=_CHECKS
)
#: What every fuzz test runs with; ``SUPPORTBOT_FUZZ_LONG=1`` for a long local run.
FUZZ = settings.get_profile("fuzz-long" if os.environ.get("SUPPORTBOT_FUZZ_LONG") else "fuzz")

SLACK_SECRET = "fuzz-slack-signing-secret-0123456789"
ZENDESK_SECRET = "fuzz-zendesk-webhook-secret-0123456789"
DASHBOARD_TOKEN = "fuzz-dashboard-token-0123456789"
#: The body cap the fuzz app runs with (small, so oversized cases stay cheap).
BODY_CAP = 64_000


def slack_headers(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def zendesk_headers(body: bytes, secret: str = ZENDESK_SECRET) -> dict[str, str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


@dataclass
class FuzzApp:
    """The running app and what the tests need to check it."""

    http: TestClient
    services: Services
    slack: SlackAdapter

    def counts(self) -> dict[str, int]:
        return self.services.store.counts()

    def settle(self) -> None:
        """Wait for Slack work started after an ack (turns run after the 200)."""
        portal = self.http.portal
        assert portal is not None
        portal.call(self.slack.drain, 15)


@pytest.fixture(scope="session")
def fuzz_kb(sample_kb_dir: Path, embedder: Any) -> KnowledgeBase:
    return KnowledgeBase(sample_kb_dir, embedder).load()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, fuzz_kb: KnowledgeBase) -> Iterator[FuzzApp]:
    folder = tmp_path_factory.mktemp("fuzz")
    store = Store.from_url(f"sqlite:///{folder / 'fuzz.db'}")
    retriever = Retriever(fuzz_kb)
    engine = Engine(store, Responder(retriever, confidence_model(fuzz_kb)))
    config = Settings(data_dir=folder, dashboard_token=DASHBOARD_TOKEN, max_body_bytes=BODY_CAP)
    services = Services(config, store, fuzz_kb, retriever, engine)
    zendesk = ZendeskEmulator()
    zendesk.start()
    slack = SlackEmulator()
    with start_blocking_portal() as emulator_loop:
        emulator_loop.call(slack.start)
        slack_settings = SlackSettings(
            bot_token="xoxb-fuzz",
            signing_secret=SLACK_SECRET,
            api_url=slack.api_url,
            auto_answer_channels=["C0AUTO"],
            agents_channel="C0AGENTS",
            http_timeout=3.0,
            shutdown_grace=5.0,
        )
        zendesk_settings = ZendeskSettings(
            subdomain="acme",
            email=EMAIL,
            api_token=TOKEN,
            webhook_secret=ZENDESK_SECRET,
            bot_user_id=BOT_USER_ID,
            api_url=zendesk.api_url,
            satisfaction_poll_s=0,
            http_timeout=3.0,
        )
        adapter = SlackAdapter(services, slack_settings)
        app = create_app(
            services,
            adapters={
                "slack": lambda app, _services: adapter.attach(app),
                "zendesk": lambda app, svc: mount_zendesk(app, svc, settings=zendesk_settings),
            },
        )
        try:
            with TestClient(app, raise_server_exceptions=False) as http:
                yield FuzzApp(http, services, adapter)
        finally:
            emulator_loop.call(slack.stop)
            zendesk.stop()
            store.close()
