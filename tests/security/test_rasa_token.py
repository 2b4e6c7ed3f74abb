"""``SUPPORTBOT_RASA_TOKEN``: the Rasa action server refuses calls without the shared token."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.rasa import guarded_app
from bot.service import Services, build_services
from bot.settings import Settings
from tests.adapters.rasa.conftest import action_call

pytestmark = pytest.mark.model

TOKEN = "rasa-shared-token-for-tests"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, sample_kb_dir: Path, embedder: Any
) -> Iterator[tuple[str, Services]]:
    data = tmp_path_factory.mktemp("rasa-token") / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    services = build_services(Settings(data_dir=data), embedder=embedder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = guarded_app(services.engine, token=TOKEN)
    # Sanic rewrites its request handler once per process ("touch-up"); the Rasa adapter's own
    # tests start an action server in this process too, so this one skips it.
    app.app.config.TOUCHUP = False
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not runner.started:
        assert time.monotonic() < deadline, "the action server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", services
    runner.should_exit = True
    thread.join(timeout=10)
    services.store.close()


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("?token=wrong", {}),
        ("?token=", {}),
        ("", {"Authorization": "Bearer wrong"}),
        ("?tok=" + TOKEN, {}),
    ],
    ids=["none", "wrong", "empty", "wrong-bearer", "misnamed"],
)
def test_calls_without_the_token_get_401_and_store_nothing(
    server: tuple[str, Services], query: str, headers: dict[str, str]
) -> None:
    url, services = server
    before = services.store.counts()
    body = action_call("action_answer_from_kb", "mallory", "How do I export my notes?")
    response = httpx.post(f"{url}/webhook{query}", json=body, headers=headers, timeout=30)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert services.store.counts() == before


@pytest.mark.parametrize("how", ["query", "bearer"])
def test_calls_with_the_token_run_the_action(server: tuple[str, Services], how: str) -> None:
    url, _ = server
    body = action_call("action_answer_from_kb", f"ann-{how}", "How do I export my notes?")
    if how == "query":  # what Rasa sends for action_endpoint.token
        response = httpx.post(f"{url}/webhook?token={TOKEN}", json=body, timeout=30)
    else:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = httpx.post(f"{url}/webhook", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["responses"][0]["text"]


def test_health_stays_open(server: tuple[str, Services]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
