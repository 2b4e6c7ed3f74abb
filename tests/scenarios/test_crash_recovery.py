"""Killed workers lose nothing and answer nothing twice (the inbox and outbox, `bot.outbox`).

Starts the real thing: `supportbot run --workers 2` on a fresh PostgreSQL database, answering
web chats and signed Slack events, posting to the local Slack emulator. Three faults, in turn:

1. ``after_accept`` (`bot.faults`): the worker that records the first Slack event in the inbox
   ends right there, before Slack gets its acknowledgement. The harness delivers the event
   again, as Slack does; that delivery is a repeat and acknowledged without work. Nobody
   answers it until a sweeper finds the inbox row's hold expired.
2. ``after_reply_stored``: the worker that stores the first reply (that recovered event's)
   ends before posting it. After the hold a sweeper claims the reply, finds no copy in the
   thread and posts it; the inbox row is found answered and closed.
3. A plain SIGKILL of one worker while Slack events and web chats are in flight; web clients
   and Slack retry what got no answer.

uvicorn restarts each dead worker. Afterwards every accepted message has exactly one reply in
the database and, for Slack, exactly one message on the emulator carrying that reply's id;
every reply is marked sent and every inbox row done.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest

from tests.adapters.slack.emulator import SlackEmulator, dm_event, signature_headers
from tests.support import (
    free_port,
    fresh_postgres_database,
    libpq,
    stop_gracefully,
    worker_processes,
)

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.postgres]

SECRET = "crash-test-signing-secret"
TEAM = "T0CRASH"
HOLD_S = 8.0
QUESTIONS = (
    "How do I reset my password?",
    "Can I use Lumen Notes offline?",
    "How do I export my notes?",
    "How do I delete my account?",
    "Is there a dark mode?",
    "How do I share a notebook?",
)


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the workers, dropped afterwards."""
    with fresh_postgres_database("supportbot_crash") as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    slack = SlackEmulator()
    await slack.start()
    try:
        yield slack
    finally:
        await slack.stop()


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(url)) as connection:
        return list(connection.execute(query).fetchall())


def _signed(body: bytes) -> dict[str, str]:
    return signature_headers(body, SECRET) | {"Content-Type": "application/json"}


class Customers:
    """Sends Slack DMs and web chats, retrying what got no answer as Slack and browsers do."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.slack_channels: list[str] = []
        self.web: dict[str, list[str]] = {}  # message id -> reply ids returned

    async def slack(self, index: int, text: str) -> None:
        channel, ts = f"D{index:04d}", f"{1_700_000_000 + index}.000100"
        event = dm_event(
            team=TEAM,
            channel=channel,
            user=f"U{index:04d}",
            ts=ts,
            text=text,
            event_id=f"Ev{index:04d}",
        )
        body = json.dumps(event).encode()
        for attempt in range(20):
            headers = _signed(body)
            if attempt:
                headers |= {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "timeout"}
            try:
                response = await self.client.post("/slack/events", content=body, headers=headers)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                self.slack_channels.append(channel)
                return
            await asyncio.sleep(1)
        raise AssertionError(f"Slack event {index} was never acknowledged")

    async def chat(self, index: int, text: str) -> None:
        message_id = f"m-{index}"
        body = {
            "conversation_id": f"crash-{index}",
            "user": f"u-{index}",
            "text": text,
            "message_id": message_id,
        }
        for _ in range(20):
            try:
                response = await self.client.post("/api/chat", json=body)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                self.web[message_id] = [reply["id"] for reply in response.json()["replies"]]
                return
            await asyncio.sleep(1)
        raise AssertionError(f"web chat {index} was never answered")


async def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 300
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError((await asyncio.to_thread(log.read_text))[-3000:])
            try:
                healthy = (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                healthy = False
            if healthy and len(worker_processes(process.pid)) == 2:
                return
            assert time.monotonic() < deadline, "the workers did not start in time"
            await asyncio.sleep(1)


def _start(
    env: dict[str, str], port: int, log_path: Path
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """`supportbot run --workers 2`, its output going to `log_path`."""
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log


async def test_killed_workers_lose_nothing_and_answer_nothing_twice(
    postgres_db: str, emulator: SlackEmulator, sample_kb_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    policies = tmp_path / "policies.yaml"
    policies.write_text("turn_taking:\n  burst_window_seconds: 0.1\n")
    fault = tmp_path / "fault"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SUPPORTBOT_"))},
        "DATABASE_URL": postgres_db,
        "SUPPORTBOT_DATA_DIR": str(data),
        "SUPPORTBOT_POLICIES": str(policies),
        "SUPPORTBOT_OUTBOX_HOLD_S": str(HOLD_S),
        "SUPPORTBOT_OUTBOX_SWEEP_S": "0.5",
        "SUPPORTBOT_FAULT": "after_accept,after_reply_stored",
        "SUPPORTBOT_FAULT_ONCE": str(fault),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SLACK_BOT_TOKEN": "xoxb-crash-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": emulator.api_url,
    }
    log_path = tmp_path / "run.log"
    process, log = _start(env, port, log_path)
    try:
        await _wait_ready(process, port, log_path)
        first_workers = worker_processes(process.pid)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            customers = Customers(client)
            # Faults 1 and 2: the first event's worker dies after recording it, the first
            # stored reply's worker before posting it. Both end up answered by sweepers.
            await customers.slack(0, QUESTIONS[0])
            await emulator.wait_for(lambda: len(emulator.messages["D0000"]) >= 1, within=180)
            assert (tmp_path / "fault.after_accept").exists()
            assert (tmp_path / "fault.after_reply_stored").exists()
            await _wait_ready(process, port, log_path)

            # Fault 3: SIGKILL one worker while events and chats are in flight.
            load = [
                asyncio.create_task(customers.slack(i, QUESTIONS[i % len(QUESTIONS)]))
                for i in range(1, 7)
            ] + [
                asyncio.create_task(customers.chat(i, QUESTIONS[i % len(QUESTIONS)]))
                for i in range(6)
            ]
            await asyncio.sleep(0.5)
            victim = min(worker_processes(process.pid))
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*load), timeout=240)
            channels = set(customers.slack_channels)
            await emulator.wait_for(lambda: all(emulator.messages[c] for c in channels), within=180)
            # Sweeps go on: give a stray second copy time to appear, were there one.
            await asyncio.sleep(HOLD_S * 2 + 2)
        assert first_workers - worker_processes(process.pid), "no worker was replaced"
        assert "Child process" in await asyncio.to_thread(log_path.read_text)

        # Slack: one post per accepted event, each carrying a distinct stored reply.
        posted = {c: emulator.messages[c] for c in channels}
        assert {c: len(m) for c, m in posted.items()} == dict.fromkeys(channels, 1)
        posted_ids = [m[0]["metadata"]["event_payload"]["reply_id"] for m in posted.values()]
        # Web: one reply per chat, the same one on a retry.
        assert all(len(ids) == 1 for ids in customers.web.values()), customers.web
        per_message = _rows(
            postgres_db,
            """SELECT c.platform, m.platform_message_id, count(DISTINCT m.id), count(r.id)
               FROM message m JOIN conversation c ON c.id = m.conversation_id
               LEFT JOIN reply r ON r.message_id = m.id
               WHERE m.role = 'user' GROUP BY c.platform, m.platform_message_id""",
        )
        assert len(per_message) == len(channels) + len(customers.web)
        assert {(count, replies) for _, _, count, replies in per_message} == {(1, 1)}
        replies = dict(_rows(postgres_db, "SELECT id, delivery FROM reply"))
        assert set(replies.values()) == {"sent"}
        assert set(posted_ids) | {ids[0] for ids in customers.web.values()} == set(replies)
        inbox = Counter(status for (status,) in _rows(postgres_db, "SELECT status FROM inbox"))
        assert inbox == Counter({"done": len(channels)})
    finally:
        assert stop_gracefully(process, log), "the server did not stop within 60 s"
