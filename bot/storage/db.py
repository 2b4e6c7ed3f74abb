"""Engines and migrations.

`make_engine` builds an engine tuned for the backend (SQLite: WAL, foreign keys, a busy timeout;
PostgreSQL: pre-ping of pooled connections). `migrate` brings a database to the newest schema with
the Alembic scripts bundled in `bot/storage/migrations`; no `alembic.ini` is needed at runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from bot.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "SCHEMA_HEAD",
    "SQLITE_PRAGMAS",
    "alembic_config",
    "describe_url",
    "make_engine",
    "migrate",
    "normalize_url",
    "schema_revision",
    "storage_error",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"
"""The bundled Alembic script directory (`env.py`, `script.py.mako`, `versions/`)."""

SCHEMA_HEAD = "0011"
"""The newest revision in `MIGRATIONS_DIR` (tests/storage/test_db.py checks it against Alembic's
own reading of the scripts): a database already there is left as it is without loading Alembic
(`migrate`)."""

SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
"""Run on every new SQLite connection."""

_SQLITE_FILE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
)
"""Run on every new connection to an SQLite file (not to an in-memory database)."""

_POSTGRES_CONNECT_TIMEOUT_S = 10


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL, choosing the psycopg 3 driver for bare PostgreSQL URLs.

    `postgres://…` and `postgresql://…` (as hosting services hand them out) become
    `postgresql+psycopg://…`, the driver this project installs.

    Raises:
        StorageError: the URL cannot be parsed.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise StorageError(
            f"cannot parse the database URL {url!r}: check DATABASE_URL "
            "(e.g. sqlite:///.supportbot/supportbot.db or "
            "postgresql+psycopg://user:password@host:5432/dbname)"
        ) from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def describe_url(url: str | URL) -> str:
    """The URL as it is safe to show in logs and error messages: the password hidden."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparsable URL>"
    return parsed.render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    """The file an SQLite URL points at, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        path = database.removeprefix("file:").split("?", 1)[0]
        if not path or path == ":memory:" or "mode=memory" in database:
            return None
        return Path(path)
    return Path(database)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for `url`, set up for the bot's access pattern.

    SQLite files get `journal_mode=WAL`, `synchronous=NORMAL`, `foreign_keys=ON` and
    `busy_timeout=5000` on every connection, and the file's directory is created if missing.
    PostgreSQL engines pre-ping pooled connections and time out connecting after 10 seconds.

    Args:
        url: an SQLAlchemy database URL.
        **kwargs: passed on to `sqlalchemy.create_engine`.

    Returns:
        The engine; nothing is connected yet.

    Raises:
        StorageError: the URL cannot be parsed, names an unknown driver, or its SQLite
            directory cannot be created.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        file = _sqlite_file(parsed)
        if file is not None:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the directory {file.parent} for the SQLite database: {exc}"
                ) from exc
        pragmas = SQLITE_PRAGMAS + (_SQLITE_FILE_PRAGMAS if file is not None else ())
    elif backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        if "connect_timeout" not in parsed.query:
            connect_args = dict(kwargs.get("connect_args", {}))
            connect_args.setdefault("connect_timeout", _POSTGRES_CONNECT_TIMEOUT_S)
            kwargs["connect_args"] = connect_args
        pragmas = ()
    else:
        pragmas = ()
    # Errors are logged: their bound parameters (customers' messages) must stay out of the logs.
    kwargs.setdefault("hide_parameters", True)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StorageError(
            f"cannot create a database engine for {describe_url(parsed)}: {exc}; check "
            "DATABASE_URL (supported: sqlite:///path/to/file.db, postgresql+psycopg://…)"
        ) from exc
    if pragmas:

        def set_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for pragma in pragmas:
                    cursor.execute(pragma)
            finally:
                cursor.close()

        event.listen(engine, "connect", set_pragmas)
    logger.debug("database engine for %s", describe_url(parsed))
    return engine


def storage_error(exc: SQLAlchemyError, url: str | URL, action: str) -> StorageError:
    """Turn a SQLAlchemy error into a `StorageError` that says what to check.

    Args:
        exc: the error.
        url: the database it happened on (shown with the password hidden).
        action: what was being done, e.g. "store a message".
    """
    where = describe_url(url)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = detail[0] if detail else type(exc).__name__
    if isinstance(exc, OperationalError):
        if where.startswith("sqlite"):
            hint = (
                "check DATABASE_URL, that the file's directory is writable and that no other "
                "process holds a long write lock"
            )
        else:
            hint = (
                "check DATABASE_URL (host, port, user, password, database name) and that the "
                "database server is running and reachable"
            )
        return StorageError(f"cannot {action}: the database at {where} failed: {reason}; {hint}")
    return StorageError(f"cannot {action} in the database at {where}: {reason}")


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic configuration pointing at the bundled migration scripts.

    Args:
        url: the database URL for Alembic to connect to when no connection is handed over in
            `config.attributes["connection"]`.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        # ConfigParser interpolation: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def migrate(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Upgrade the database to `revision` (the newest schema by default).

    Safe to run on every start: an up-to-date database is left as it is. Every worker and
    command runs this as it starts, and most find the database at `SCHEMA_HEAD` already: one
    read of its revision tells so, and Alembic (0.07 s to import on a 2-core machine, more with
    its no-op upgrade) is loaded only when there is something to do.

    Args:
        engine_or_url: an engine, or a URL to build one from (disposed afterwards).
        revision: the Alembic revision to upgrade to.

    Raises:
        StorageError: the database cannot be reached or refused the migration.
    """
    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    try:
        if revision not in ("head", SCHEMA_HEAD) or schema_revision(engine) != SCHEMA_HEAD:
            from alembic import command

            config = alembic_config()
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise storage_error(exc, engine.url, "migrate the database schema") from exc
    finally:
        if engine is not engine_or_url:
            engine.dispose()
    logger.info("database %s is at schema revision %s", describe_url(engine.url), revision)


def schema_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (Alembic's version table), or None for a
    database that has none yet.

    Raises:
        SQLAlchemyError: the database cannot be reached or read.
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    # One row on a linear history; anything else is left to Alembic to judge.
    return str(versions[0][0]) if len(versions) == 1 else None
