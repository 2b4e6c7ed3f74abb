"""Engines, migrations and connection errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from bot.errors import StorageError
from bot.storage.db import (
    MIGRATIONS_DIR,
    SCHEMA_HEAD,
    alembic_config,
    make_engine,
    migrate,
    normalize_url,
    schema_revision,
)
from bot.storage.store import Store
from bot.storage.tables import TABLE_NAMES, metadata
from tests.support import run_python

BUNDLED_INI = MIGRATIONS_DIR.parent / "alembic.ini"


def _diffs(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrated_schema_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        # The comparison sees a missing schema, so an empty result below means something.
        missing = _diffs(engine)
        added = {
            diff[1].name for diff in missing if isinstance(diff, tuple) and diff[0] == "add_table"
        }
        assert added == set(TABLE_NAMES)

        migrate(engine)
        assert _diffs(engine) == []
        assert set(TABLE_NAMES) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_is_idempotent_and_reversible(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        migrate(engine)
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) & set(TABLE_NAMES) == set()
        migrate(db_url)  # from a URL this time
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_schema_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    # A new migration needs SCHEMA_HEAD moved to it, or `migrate` would skip it.
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_HEAD]


def test_migrate_upgrades_an_older_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert schema_revision(engine) is None
        migrate(engine)
        assert schema_revision(engine) == SCHEMA_HEAD
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "-1")
        older = schema_revision(engine)
        assert older is not None and older != SCHEMA_HEAD
        assert _diffs(engine) != []

        migrate(engine)
        assert schema_revision(engine) == SCHEMA_HEAD
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_an_up_to_date_database_is_left_without_loading_alembic(db_url: str) -> None:
    migrate(db_url)
    # A fresh interpreter, as a worker starts: the check reads the revision and stops there.
    script = (
        "import sys\n"
        "from bot.storage.db import migrate\n"
        f"migrate({db_url!r})\n"
        "print(sorted(m for m in sys.modules if m == 'alembic' or m.startswith('alembic.')))\n"
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_alembic_command_line_uses_database_url(tmp_path: Path) -> None:
    target = tmp_path / "cli" / "bot.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{target}"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(BUNDLED_INI), "upgrade", "head"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    engine = make_engine(f"sqlite:///{target}")
    try:
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_sqlite_engine_settings(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 5000
            assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert engine.url.database is not None
        assert Path(engine.url.database).parent.is_dir()  # created on demand
    finally:
        engine.dispose()


def test_sqlite_in_memory_engine_has_foreign_keys() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_engine_pre_pings(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


def test_bare_postgres_urls_get_the_psycopg_driver() -> None:
    for url in ("postgres://u:p@db/x", "postgresql://u:p@db/x"):
        assert normalize_url(url).drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_unreachable_server_raises_a_helpful_storage_error() -> None:
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:1/test"
    with pytest.raises(StorageError) as raised:
        Store.from_url(url)
    message = str(raised.value)
    assert "127.0.0.1:1" in message
    assert "DATABASE_URL" in message
    assert "running" in message
    assert "secret" not in message  # the password is hidden

    store = Store.from_url(url, migrate=False)  # connects lazily ...
    try:
        with pytest.raises(StorageError, match="DATABASE_URL"):
            store.claim_event("web", "e1")  # ... and fails on first use
    finally:
        store.close()


def test_bad_urls_raise_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="DATABASE_URL"):
        make_engine("not a url")
    with pytest.raises(StorageError, match="DATABASE_URL"):
        make_engine("nosuchdb://host/x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="directory"):
        make_engine(f"sqlite:///{blocker / 'sub' / 'bot.db'}")
