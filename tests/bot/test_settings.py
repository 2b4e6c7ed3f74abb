"""Process settings: defaults, the DATABASE_URL rewrite and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import Settings, load_settings

#: Every variable that could leak the developer's own configuration into these tests.
ENVIRONMENT = (
    "DATABASE_URL",
    "SUPPORTBOT_DATABASE_URL",
    "SUPPORTBOT_DATA_DIR",
    "SUPPORTBOT_KB_DIR",
    "SUPPORTBOT_MODEL",
    "SUPPORTBOT_THRESHOLD",
    "SUPPORTBOT_HISTORY_TURNS",
    "SUPPORTBOT_HOST",
    "SUPPORTBOT_PORT",
    "SUPPORTBOT_BOT_NAME",
    "SUPPORTBOT_MAX_MESSAGE_CHARS",
    "SUPPORTBOT_EMBED_LANES",
    "SUPPORTBOT_EMBED_BACKEND",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = Settings()

    assert settings.data_dir == Path(".supportbot")
    assert settings.database_url is None
    assert settings.kb_dir is None
    assert settings.model is None
    assert settings.threshold is None
    assert settings.index_dir == Path(".supportbot") / "index"
    assert settings.history_turns == 8
    assert settings.max_message_chars == 4000
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.bot_name == "Lumen Assistant"
    assert settings.embed_backend == "auto"  # ONNX Runtime, torch where it cannot be used


def test_default_database_is_an_absolute_sqlite_file_under_the_data_dir(tmp_path: Path) -> None:
    url = Settings().db_url

    expected = (tmp_path / ".supportbot" / "supportbot.db").resolve()
    assert url == f"sqlite:///{expected}"
    assert Path(url.removeprefix("sqlite:///")).is_absolute()


def test_data_dir_from_the_environment_moves_database_and_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "elsewhere"))

    settings = Settings()

    assert settings.data_dir == tmp_path / "elsewhere"
    assert settings.db_url == f"sqlite:///{(tmp_path / 'elsewhere' / 'supportbot.db').resolve()}"
    assert settings.index_dir == tmp_path / "elsewhere" / "index"


def test_kb_dir_overrides_the_index_location(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", kb_dir=tmp_path / "kb")

    assert settings.index_dir == tmp_path / "kb"
    assert settings.db_url.endswith(str((tmp_path / "data" / "supportbot.db").resolve()))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgres://bot:secret@db.example:5432/support",
            "postgresql+psycopg://bot:secret@db.example:5432/support",
        ),
        (
            "postgresql://bot:secret@db.example:5432/support",
            "postgresql+psycopg://bot:secret@db.example:5432/support",
        ),
        (
            "postgresql+psycopg://bot@127.0.0.1:5432/support",
            "postgresql+psycopg://bot@127.0.0.1:5432/support",
        ),
        ("sqlite:////var/lib/bot/bot.db", "sqlite:////var/lib/bot/bot.db"),
    ],
    ids=["postgres", "postgresql", "already-psycopg", "sqlite"],
)
def test_database_url_from_the_environment_gets_the_psycopg_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)

    assert Settings().db_url == expected


def test_prefixed_database_url_works_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", "postgres://bot@db.example/support")

    assert Settings().db_url == "postgresql+psycopg://bot@db.example/support"


def test_database_url_keyword_is_accepted() -> None:
    settings = Settings(database_url="postgres://bot@db.example/support")

    assert settings.db_url == "postgresql+psycopg://bot@db.example/support"


def test_empty_database_url_means_the_sqlite_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "")

    assert (
        Settings().db_url == f"sqlite:///{(tmp_path / '.supportbot' / 'supportbot.db').resolve()}"
    )


@pytest.mark.parametrize("value", [0.0, 0.35, 1.0])
def test_threshold_in_range_is_accepted(value: float) -> None:
    assert load_settings(threshold=value).threshold == value


def test_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_THRESHOLD", "0.3")

    assert load_settings().threshold == 0.3


@pytest.mark.parametrize("value", [-0.01, 1.01, 5.0])
def test_threshold_out_of_range_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match="SUPPORTBOT_THRESHOLD must be between 0 and 1"):
        load_settings(threshold=value)


@pytest.mark.parametrize("value", ["1.5", "-1", "not-a-number"])
def test_bad_threshold_in_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SUPPORTBOT_THRESHOLD", value)

    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings()


def test_load_settings_ignores_unset_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI options left out arrive as None and must not hide the environment."""
    monkeypatch.setenv("SUPPORTBOT_PORT", "9000")

    settings = load_settings(host=None, port=None, threshold=None)

    assert (settings.host, settings.port, settings.threshold) == ("127.0.0.1", 9000, None)
    assert load_settings(port=8123).port == 8123


def test_embed_lanes_reach_the_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.service import make_embedder

    assert make_embedder(Settings()).lanes == 2
    monkeypatch.setenv("SUPPORTBOT_EMBED_LANES", "1")
    assert make_embedder(load_settings()).lanes == 1
    monkeypatch.setenv("SUPPORTBOT_EMBED_LANES", "0")
    with pytest.raises(ConfigError, match="embed_lanes"):
        load_settings()
