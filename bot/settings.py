"""Process settings, from the environment (prefix ``SUPPORTBOT_``) with embedded defaults.

A user who configures nothing gets a SQLite file and the bundled sample knowledge base under
``./.supportbot``. ``DATABASE_URL`` (no prefix, as platforms set it) selects PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

SAMPLE_KB = Path(__file__).resolve().parent.parent / "knowledge" / "sample"


def sample_kb_paths() -> list[Path]:
    """The bundled sample knowledge base: its FAQ file and its articles folder."""
    return [SAMPLE_KB / "faq.jsonl", SAMPLE_KB / "articles"]


class Settings(BaseSettings):
    """Every setting a process needs; validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="SUPPORTBOT_", extra="ignore")

    data_dir: Path = Path(".supportbot")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SUPPORTBOT_DATABASE_URL")
    )
    kb_dir: Path | None = None
    model: Path | None = None
    threshold: float | None = None
    history_turns: int = 8
    host: str = "127.0.0.1"
    port: int = 8000
    bot_name: str = "Lumen Assistant"
    max_message_chars: int = 4000
    #: The conversation policies' YAML file (``SUPPORTBOT_POLICIES``); None: the bundled defaults.
    policies: Path | None = None
    #: Where handed-over conversations go (``SUPPORTBOT_HANDOFF_DESK``); None: handoffs are logged.
    handoff_desk: Literal["slack", "zendesk", "discord"] | None = None
    #: Seconds a handoff waits for an agent before the customer is offered another way.
    handoff_timeout_s: float = Field(default=600.0, gt=0)
    #: Seconds between the relay's delivery rounds in each adapter.
    relay_poll_s: float = Field(default=1.0, gt=0)
    #: Completes "You can ..." when nobody claims a handoff in time.
    handoff_contact: str = "open a ticket on our help center"

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("SUPPORTBOT_THRESHOLD must be between 0 and 1")
        return value

    @property
    def index_dir(self) -> Path:
        return self.kb_dir or self.data_dir / "index"

    @property
    def db_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Heroku-style URLs name the driver-less scheme; SQLAlchemy wants the driver.
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgres://")
            elif url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.data_dir / 'supportbot.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI options) on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(f"invalid settings: {e}") from e
