"""Fixtures for the storage tests: one empty database per test, on SQLite and PostgreSQL.

SQLite databases are temporary files. PostgreSQL tests share one database per test session,
created with a random name (`supportbot_test_<hex>`) so concurrent runs never collide, and each
test gets its own schema in it (selected through `search_path`). Both are dropped at teardown.

Set SUPPORTBOT_TEST_POSTGRES_URL to use another server (default: the `test` database at
127.0.0.1:5432 as user postgres); the PostgreSQL tests are skipped when it is unreachable
(and fail under CI=true, where it must be there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import URL, make_url

from bot.storage.store import Store
from tests.support import fresh_postgres_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _libpq(url: URL) -> str:
    """The URL as psycopg takes it (no `+psycopg` driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A fresh, uniquely named PostgreSQL database for this test session."""
    with fresh_postgres_database("supportbot_test") as url:
        yield make_url(url)


@pytest.fixture
def postgres_url(postgres_database: URL) -> Iterator[str]:
    """An empty schema of its own in the session's database, as a URL."""
    schema = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(_libpq(postgres_database), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = postgres_database.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(postgres_database), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL to an SQLite file in a directory that does not exist yet."""
    return f"sqlite:///{tmp_path / 'data' / 'supportbot.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty, unmigrated database on each backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on each backend."""
    opened = Store.from_url(db_url)
    try:
        yield opened
    finally:
        opened.close()
