"""Telemetry: Prometheus metrics of the live bot, and logs that name the conversation.

Prometheus (`PrometheusTelemetry`, served at ``/metrics`` by `bot.app`): counters of replies by
kind, handoffs and feedback ratings, and a histogram of reply latency, in a registry of its own
(no process-wide singleton, so several apps, e.g. in tests, never share counts). The engine
reports to it through its `TurnListener` hooks.

Several workers (``supportbot run --workers N``) count together: the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start, every worker's values
go to files there (prometheus_client's multiprocess mode), and whichever worker answers a scrape
adds up all of them, those of workers that have since died included. Without the variable each
process counts alone.

Logs (`configure_logging`): every record made while a turn runs carries the turn's conversation
(``conversation``: the platform key, ``conversation_id``: the database id), set by the engine
through `conversation_scope` (a `contextvars.ContextVar`, so threads and tasks keep their own).
``--log-format json`` writes one JSON object a line with those fields; ``text`` appends them.

What never goes into INFO logs: message texts, tokens, secrets (audited; see docs/monitoring.md).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "LATENCY_BUCKETS_S",
    "MULTIPROC_DIR_ENV",
    "LogFormat",
    "PrometheusTelemetry",
    "configure_logging",
    "conversation_scope",
    "current_conversation",
]

LogFormat = Literal["text", "json"]

#: prometheus_client's own variable: a folder shared by the processes whose metrics add up.
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: Reply latency buckets (seconds): most turns take tens of milliseconds, a generative answer
#: several seconds.
LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_CONVERSATION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "supportbot_conversation", default=None
)
_CONVERSATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "supportbot_conversation_id", default=None
)


@contextmanager
def conversation_scope(
    key: str | None = None, conversation_id: str | None = None
) -> Iterator[None]:
    """Within the block, log records carry this conversation; both values are put back after,
    including a database id named inside the block with `set_conversation_id`."""
    key_token = _CONVERSATION.set(key)
    id_token = _CONVERSATION_ID.set(conversation_id)
    try:
        yield
    finally:
        _CONVERSATION_ID.reset(id_token)
        _CONVERSATION.reset(key_token)


def set_conversation_id(conversation_id: str) -> None:
    """Name the conversation's database id for the rest of the current scope."""
    _CONVERSATION_ID.set(conversation_id)


def current_conversation() -> tuple[str | None, str | None]:
    """The (key, database id) of the conversation whose turn runs now, if any."""
    return _CONVERSATION.get(), _CONVERSATION_ID.get()


class ConversationFilter(logging.Filter):
    """Adds ``conversation`` and ``conversation_id`` to every record (None outside a turn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        key, conversation_id = current_conversation()
        if not hasattr(record, "conversation"):
            record.conversation = key
        if not hasattr(record, "conversation_id"):
            record.conversation_id = conversation_id
        return True


class _TextFormatter(logging.Formatter):
    """The usual line, plus ``[conversation=...]`` while a turn runs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        conversation_id = getattr(record, "conversation_id", None)
        if conversation_id:
            line += f" [conversation={conversation_id}]"
        return line


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(conversation)s %(conversation_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    )


#: Libraries' loggers heard only when debugging:
#: * FAISS reports at INFO each faster build it could not load ("No module named
#:   'faiss.swigfaiss_avx512'") before the one it uses: normal, but it reads like an error;
#: * ONNX Runtime's transformer optimizer, which fuses the model's export once per data folder
#:   (`knowledge.onnx`), narrates each fusion at INFO under these top-level names;
#: * Alembic lists each of its plugins as it sets them up before a migration, seven lines on a
#:   first start (the migrations themselves, `alembic.runtime.migration`, are still heard).
CHATTY_LOGGERS = (
    "faiss.loader",
    "fusion_base",
    "onnx_model",
    "onnx_model_bert",
    "alembic.runtime.plugins",
)


def configure_logging(
    log_format: LogFormat = "text", *, level: int = logging.INFO, stream: Any = None
) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) as text lines or JSON objects.

    Replaces the handlers a previous call installed; returns the new handler.

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"the log format is 'text' or 'json', not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    # Also below a library's own logger level: bm25s sets its logger to DEBUG when imported.
    handler.setLevel(level)
    handler.addFilter(ConversationFilter())
    if log_format == "json":
        handler.setFormatter(_json_formatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("supportbot")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "supportbot":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.WARNING if level > logging.DEBUG else logging.NOTSET
        )
    return handler


class PrometheusTelemetry:
    """The live bot's counters and latency histogram, in a registry of their own.

    It implements the engine's `TurnListener` hooks (`replied`, `handed_over`, `rated`).

    Args:
        registry: where the metrics live; a fresh `CollectorRegistry` by default.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (before prometheus_client is first imported, which is
    when it chooses where values live) the exposition sums every process's files there.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) or None
        self.replies = Counter(
            "supportbot_replies",
            "Replies the bot gave, by kind (answer, clarify, fallback, handoff, smalltalk).",
            ["kind"],
            registry=self.registry,
        )
        self.handoffs = Counter(
            "supportbot_handoffs",
            "Conversations the bot handed to a person.",
            registry=self.registry,
        )
        self.feedback = Counter(
            "supportbot_feedback",
            "Ratings of replies that changed the stored feedback, by value (up, down, withdrawn).",
            ["value"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "supportbot_reply_latency_seconds",
            "Time from a turn's start to its reply being decided.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def replied(self, kind: str, latency_ms: float) -> None:
        self.replies.labels(kind=kind).inc()
        self.latency.observe(max(latency_ms, 0.0) / 1000)

    def handed_over(self) -> None:
        self.handoffs.inc()

    def rated(self, value: str | None) -> None:
        self.feedback.labels(value=value or "withdrawn").inc()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        every_process = CollectorRegistry()
        # prometheus_client leaves this constructor unannotated.
        MultiProcessCollector(every_process, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(every_process), CONTENT_TYPE_LATEST
