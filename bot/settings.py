"""Process settings, from the environment (prefix ``SUPPORTBOT_``) with embedded defaults.

A user who configures nothing gets a SQLite file and the bundled sample knowledge base under
``./.supportbot``. ``DATABASE_URL`` (no prefix, as platforms set it) selects PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
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
    #: A sentence-transformers model folder, or a `supportbot train --out` folder (its current
    #: version); None: the bundled all-MiniLM-L6-v2.
    model: Path | None = None
    threshold: float | None = None
    history_turns: int = 8
    host: str = "127.0.0.1"
    port: int = 8000
    bot_name: str = "Lumen Assistant"
    max_message_chars: int = 4000
    #: HTTP request bodies larger than this (bytes) get 413 before any route reads them
    #: (``SUPPORTBOT_MAX_BODY_BYTES``); Slack and Zendesk events are a few kilobytes.
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    #: Messages one platform user may send, e.g. ``20/minute`` (``SUPPORTBOT_RATE_LIMIT``;
    #: ``N/second``, ``N/minute``, ``N/hour``); None: no limit. See `bot.ratelimit`.
    rate_limit: str | None = None
    #: Store customers' messages with personal data masked (``SUPPORTBOT_REDACT_TRANSCRIPTS=1``);
    #: the turn itself still reads the real text.
    redact_transcripts: bool = False
    #: The Rasa action server's shared token (``SUPPORTBOT_RASA_TOKEN``); None: no check.
    rasa_token: SecretStr | None = None
    #: The conversation policies' YAML file (``SUPPORTBOT_POLICIES``); None: the bundled defaults.
    policies: Path | None = None
    #: Where handed-over conversations go (``SUPPORTBOT_HANDOFF_DESK``); None: handoffs are logged.
    handoff_desk: Literal["slack", "zendesk", "discord"] | None = None
    #: Seconds a handoff waits for an agent before the customer is offered another way.
    handoff_timeout_s: float = Field(default=600.0, gt=0)
    #: Seconds between the relay's delivery rounds in each adapter.
    relay_poll_s: float = Field(default=1.0, gt=0)
    #: Seconds a process holds an accepted message or a stored reply before another process's
    #: sweeper may take it over (``SUPPORTBOT_OUTBOX_HOLD_S``; docs/reliability.md). Longer than
    #: a turn plus its posting takes, retries included.
    outbox_hold_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    #: Seconds between sweeps for abandoned messages and unsent replies
    #: (``SUPPORTBOT_OUTBOX_SWEEP_S``).
    outbox_sweep_s: float = Field(default=5.0, gt=0, le=600.0)
    #: Sweeper tries after which a message or reply is given up and logged as an error.
    outbox_max_attempts: int = Field(default=5, ge=1, le=100)
    #: Completes "You can ..." when nobody claims a handoff in time, or when no desk is set.
    handoff_contact: str = "open a ticket on our help center"
    #: Seconds after which a card opening that never finished (a dead process) is taken again.
    relay_opening_grace_s: float = Field(default=60.0, gt=0)
    #: Seconds a card waits for the customer's handoff message to be recorded as posted.
    relay_reply_wait_s: float = Field(default=10.0, ge=0)
    #: The dashboard's login token (``SUPPORTBOT_DASHBOARD_TOKEN``); None: /dashboard is disabled.
    dashboard_token: SecretStr | None = None
    #: Share of the bot's replies drawn into the review queue (``SUPPORTBOT_REVIEW_SAMPLE_RATE``).
    review_sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    #: The QA guidelines' YAML file (``SUPPORTBOT_QA_GUIDELINES``); None: the bundled defaults.
    qa_guidelines: Path | None = None
    #: Generative answers (docs/generative.md): setting the model name turns them on.
    llm_model: str | None = None
    #: An OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8080/v1``; None: OpenAI's.
    llm_base_url: str | None = None
    #: The endpoint's key; None: ``OPENAI_API_KEY`` (keyless local servers need none).
    llm_api_key: SecretStr | None = None
    llm_temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    #: Seconds a generated answer may take; past it the extractive answer goes out.
    llm_timeout_s: float = Field(default=8.0, gt=0, le=120)
    llm_max_tokens: int = Field(default=400, ge=16, le=8000)
    #: Knowledge-base passages given to the model (the answered entry and the next closest).
    llm_passages: int = Field(default=3, ge=1, le=10)
    #: The prompt templates' version: a folder under ``bot/prompts`` or ``prompts_dir``.
    prompt_version: str = "v1"
    prompts_dir: Path | None = None
    #: Query embedding (docs/benchmarks.md, "Hot path"): ``auto`` (ONNX Runtime, the model
    #: exported once next to the index; torch where that fails), ``onnx`` (ONNX Runtime or an
    #: error) or ``torch`` (sentence-transformers). The same vectors either way (cosine ≥
    #: 0.9999, the same BANKING77 figures); ONNX Runtime answers 2.6 times as fast and its
    #: workers start without importing torch.
    embed_backend: Literal["torch", "onnx", "auto"] = "auto"
    #: Run the ONNX model quantized to int8 (``SUPPORTBOT_EMBED_QUANTIZE=1``).
    embed_quantize: bool = False
    #: Vectors of this many recent query texts are kept in memory (0: no cache).
    embed_cache_size: int = Field(default=1024, ge=0)
    #: Concurrent queries wait up to this many ms to share a forward pass; unset: no batching.
    embed_batch_window_ms: float | None = Field(default=None, ge=0, le=50)
    #: Concurrent turns wait up to this long to share one whole retrieval (embedding, FAISS,
    #: BM25: `Responder.respond_many`); None: each turn retrieves on its own.
    decision_batch_window_ms: float | None = Field(default=None, ge=0, le=50)
    #: ONNX Runtime threads per process (0: the machine's cores, at most 4).
    embed_threads: int = Field(default=0, ge=0)
    #: ONNX Runtime forward passes of a batch of messages that run at once (batched
    #: decisions); 1: one after another.
    embed_lanes: int = Field(default=2, ge=1, le=16)
    #: Memory-map the dense index instead of reading it (shared between workers, fast start).
    index_mmap: bool = True

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("SUPPORTBOT_THRESHOLD must be between 0 and 1")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_readable(cls, value: str | None) -> str | None:
        from bot.ratelimit import RateLimit

        if value is None or not value.strip() or value.strip().lower() in ("0", "off", "none"):
            return None
        RateLimit.parse(value)  # raises ValueError with a message that says how to write it
        return value.strip()

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


#: Variables whose value may come from a file named by ``<NAME>_FILE`` (Docker and Kubernetes
#: secrets): every setting of the bot and its adapters, the database URL and the LLM key.
SECRET_FILE_PREFIXES = ("SUPPORTBOT_", "SLACK_", "ZENDESK_", "DISCORD_", "RASA_")
SECRET_FILE_NAMES = frozenset({"DATABASE_URL", "OPENAI_API_KEY"})


def resolve_secret_files(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Read ``<NAME>_FILE`` variables into ``<NAME>``, so secrets can live in mounted files.

    For every variable ``X_FILE`` where ``X`` is one of the bot's settings (prefix
    ``SUPPORTBOT_``, ``SLACK_``, ``ZENDESK_``, ``DISCORD_``, ``RASA_``, or ``DATABASE_URL``,
    ``OPENAI_API_KEY``), ``X`` is set to the file's content without its trailing newline. Every
    settings class (the bot's and each adapter's) then reads ``X`` as usual. Values are never
    logged; only the names are returned.

    Args:
        environ: the environment to read and update; `os.environ` when None.

    Returns:
        The names that were set from files.

    Raises:
        ConfigError: both ``X`` and ``X_FILE`` are set, or the file cannot be read.
    """
    env = os.environ if environ is None else environ
    resolved: list[str] = []
    for variable in sorted(env):
        if not variable.endswith("_FILE"):
            continue
        name = variable.removesuffix("_FILE")
        if not (name.startswith(SECRET_FILE_PREFIXES) or name in SECRET_FILE_NAMES):
            continue
        if name == "SUPPORTBOT":  # "SUPPORTBOT_FILE" names no setting
            continue
        if env.get(name):
            raise ConfigError(f"both {name} and {variable} are set: keep only one of them")
        path = Path(env[variable]).expanduser()
        try:
            value = path.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{variable} names {str(path)!r}, which cannot be read ({e.__class__.__name__}): "
                "fix the path or the file's permissions, or unset it"
            ) from e
        env[name] = value
        resolved.append(name)
    return resolved


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI options) on top.

    ``<NAME>_FILE`` variables are read first (`resolve_secret_files`), so adapters' settings,
    read from the environment later, see them too.
    """
    resolve_secret_files()
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(f"invalid settings: {e}") from e
