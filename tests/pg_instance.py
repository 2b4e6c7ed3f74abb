"""A private PostgreSQL server for tests that stop and restart it.

`PrivatePostgres` runs ``initdb`` into a fresh temporary folder and serves it with ``pg_ctl`` on
a free port of 127.0.0.1, so a test can restart or kill the server without touching the shared
one at :5432. PostgreSQL refuses to run as root: as root the commands run as the ``postgres``
user (``runuser -u postgres --``), which then owns the folder. The `private_postgres` fixture
gives a test module one such server, removed afterwards; it skips only when no PostgreSQL server
binaries are installed at all.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

__all__ = ["PrivatePostgres", "find_bindir", "private_postgres"]

#: Where Debian/Ubuntu packages put the server binaries, newest version first.
BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
#: Every pg_ctl call waits at most this long (start, stop and restart use ``-w``).
PG_CTL_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: $PG_BINDIR, the newest packaged
    version, or the PATH; None when there is none."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(
        glob.glob(BINDIR_GLOB), key=lambda p: int(Path(p).parent.name or 0), reverse=True
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        folder = Path(candidate)
        if candidate and (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


class PrivatePostgres:
    """One PostgreSQL server of its own: `start`, `restart`, `stop`, `url`.

    Args:
        bindir: the folder of ``initdb`` and ``pg_ctl``.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            # The server's own user must own its folder (and reach it).
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S + 30, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text("utf-8", "replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log:\n{log}"
            )

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(PG_CTL_TIMEOUT_S), *extra,
        )  # fmt: skip

    def start(self) -> None:
        """initdb (trust authentication, user postgres) on first use, then start and wait."""
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
        self._pg_ctl("start")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast|immediate|smart``: every connection is cut."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        """Stop the server (if running) and delete its folder."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for this test module, started; removed afterwards."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl): install postgresql, or set "
            "PG_BINDIR to their folder"
        )
    server = PrivatePostgres(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()
