"""Helpers the test packages share.

* `sample_services`: a whole bot, its services on a fresh SQLite file and a copy of the sample
  index. Test modules build one inside their own ``services`` fixture, so each module keeps its
  own database and settings while the model, loaded once per session, is shared.
* `fresh_postgres_database`: a uniquely named database on the test PostgreSQL server
  (``SUPPORTBOT_TEST_POSTGRES_URL``), dropped afterwards; unreachable, it skips the test, or
  fails it under CI, where PostgreSQL always runs.
* `free_port`: a free TCP port on 127.0.0.1.
* `worker_processes`: the uvicorn workers that ``supportbot run --workers N`` started.
* `Killed`, `PostsThenDies` and `SetClock`: a process that dies at a given line, a relay desk or
  channel whose process dies right after posting, and a clock moved by hand (the relay's crash
  tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

from bot.handoff import HandoffSink
from bot.service import Services, build_services
from bot.settings import Settings
from bot.storage.store import Store

__all__ = [
    "POSTGRES_ADMIN_URL",
    "free_port",
    "fresh_postgres_database",
    "libpq",
    "sample_services",
    "stop_gracefully",
    "worker_processes",
]

#: The test PostgreSQL server, and a database there that tests may connect to for admin work.
POSTGRES_ADMIN_URL = os.environ.get(
    "SUPPORTBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def sample_services(
    root: Path,
    sample_kb_dir: Path,
    embedder: object,
    *,
    handoff_sink: HandoffSink | None = None,
    **settings: Any,
) -> Iterator[Services]:
    """Services with their data folder under `root` (the sample index copied into it).

    Args:
        root: an empty folder; the data folder is ``root/data``.
        sample_kb_dir: the session's built sample index (the `sample_kb_dir` fixture).
        embedder: the session's loaded model (the `embedder` fixture): the index's fingerprint
            check passes with the same weights, and swapping it in spares loading them again.
        handoff_sink: where handoffs go, when the test records them itself.
        settings: `Settings` fields besides the data folder.
    """
    data = root / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    built = build_services(
        Settings(data_dir=data, **settings), handoff_sink=handoff_sink, embedder=embedder
    )
    try:
        yield built
    finally:
        built.store.close()


def libpq(url: str) -> str:
    """The URL as psycopg takes it (no ``+psycopg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database named `prefix` plus a random suffix; yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        connection = psycopg.connect(libpq(POSTGRES_ADMIN_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq(POSTGRES_ADMIN_URL), autocommit=True, connect_timeout=5) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


#: Parameters of a fixture that runs a test on an SQLite file and on a fresh PostgreSQL database.
DATABASE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@contextmanager
def shared_database(backend: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """A database several processes share (`DATABASE_BACKENDS`): an SQLite file in
    `tmp_path`, or a fresh PostgreSQL database named after `prefix`; yields its URL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with fresh_postgres_database(prefix) as url:
        yield url


def enqueue_both_ways(
    store: Store,
    conversation_id: int,
    platform: str,
    *,
    to_agent: tuple[str, str],
    to_customer: tuple[str, str],
) -> None:
    """Queue one relay message each way on `platform`: ``(target_ref, text)`` for the agents'
    card and for the customer's conversation, as a customer's and an agent's words would be."""
    for direction, (target, text) in (("to_agent", to_agent), ("to_customer", to_customer)):
        assert store.enqueue_relay(
            conversation_id,
            direction=direction,
            target_platform=platform,
            target_ref=target,
            text=text,
            author="someone",
            origin_key=f"test:{direction}",
        )


#: The repository's root, where a fresh interpreter finds the project's packages.
REPO = Path(__file__).resolve().parents[1]


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (`args` before ``-c``), in the repository, and
    capture its output: what a process imports when it starts, say."""
    return subprocess.run(
        [sys.executable, *args, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_processes(pid: int) -> set[int]:
    """The uvicorn worker processes under the supervisor `pid`, from /proc: its children
    started by multiprocessing's spawn (not the resource tracker, nor the shared-state child
    that has exited)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def stop_gracefully(process: subprocess.Popen[Any], log: IO[Any], timeout_s: float = 60) -> bool:
    """Stop a `supportbot` process as Ctrl-C does (SIGINT) and close its log; kill it if it
    has not exited within `timeout_s`. True when it exited on its own."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    return process.returncode != -signal.SIGKILL


class Killed(BaseException):
    """The process ends here (killed): no handler catches it."""


class PostsThenDies:
    """Wraps a relay desk or customer channel: it posts through the real one, then its process
    dies (`Killed`) before the relay records the post."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def open_card(self, request: Any) -> str:
        card: str = await self.inner.open_card(request)
        return card

    async def post(self, *args: Any, **kwargs: Any) -> str | None:
        await self.inner.post(*args, **kwargs)
        raise Killed


class SetClock:
    """A clock (`datetime`) that stands still until a test moves `now`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
