"""`supportbot run --workers N`: several uvicorn worker processes on one PostgreSQL database.

The refusal on SQLite runs in-process. The real thing starts `supportbot run --workers 2` as a
subprocess on a fresh PostgreSQL database, sends concurrent chat requests (and a repeated
one), and checks that two worker processes served them, every message got exactly one reply,
and the processes all stop on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from bot.cli import app
from tests.support import (
    free_port,
    fresh_postgres_database,
    libpq,
    stop_gracefully,
    worker_processes,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("DATABASE_URL", "SUPPORTBOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_more_than_one_worker_needs_postgresql(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workers", "2"])
    assert result.exit_code == 2
    assert "needs PostgreSQL" in result.output
    assert "DATABASE_URL=postgresql" in result.output
    # Refused before anything was built: no SQLite file, no index.
    assert not clean_env.exists()


def test_zero_workers_is_a_usage_error(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output


# The real processes ---------------------------------------------------------------------------


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database (workers share it), dropped afterwards."""
    with fresh_postgres_database("supportbot_workers") as url:
        yield url


def _count(url: str, query: str) -> int:
    with psycopg.connect(libpq(url)) as connection:
        row = connection.execute(query).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.postgres
def test_two_workers_share_one_database(
    postgres_db: str, sample_kb_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": postgres_db,
        "SUPPORTBOT_DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
    }
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
                try:
                    if (
                        client.get("/healthz").status_code == 200
                        and len(worker_processes(process.pid)) == 2
                    ):
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the workers did not start in time"
                time.sleep(1)

            def chat(i: int, message_id: str | None = None) -> dict[str, Any]:
                body = {
                    "conversation_id": f"w-{i}",
                    "user": f"u-{i}",
                    "text": "How do I reset my password?",
                    "message_id": message_id or f"m-{i}",
                }
                response = client.post("/api/chat", json=body)
                assert response.status_code == 200, response.text
                reply: dict[str, Any] = response.json()
                return reply

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(chat, range(8)))
            assert all(len(a["replies"]) == 1 for a in answers)
            # A repeated delivery (same message id) gets no second reply, on whichever worker:
            # the stored reply comes back.
            again = chat(3)["replies"]
            assert [r["id"] for r in again] == [r["id"] for r in answers[3]["replies"]]
        assert _count(postgres_db, "SELECT count(*) FROM reply") == 8
        assert _count(postgres_db, "SELECT count(*) FROM message WHERE role = 'user'") == 8
        workers = worker_processes(process.pid)
        assert len(workers) == 2
    finally:
        assert stop_gracefully(process, log), "the server did not stop within 60 s"
    output = (tmp_path / "run.log").read_text()
    assert process.returncode == 0, output[-3000:]
    # The index came without an ONNX export (built before ONNX Runtime was the default): the
    # supervisor's preparation exported the model once, and no worker had to.
    assert "embedded with ONNX Runtime" in " ".join(output.split())  # the console wraps it
    assert output.count("embedding queries with ONNX Runtime") == 2
    assert "to ONNX at" not in output
    assert len(list((data / "onnx").glob("*.onnx"))) == 1
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
