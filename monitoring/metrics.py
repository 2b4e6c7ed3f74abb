"""The bot's health figures, computed from the database (SQLite or PostgreSQL).

The one entry point is `compute`::

    from monitoring.metrics import compute
    metrics = compute(store, since=start, until=end, bucket="day")
    metrics.answer_rate, metrics.csat.bot_only.rate, metrics.latency.p95
    metrics.series[0].replies            # one `Bucket` per hour/day/week, oldest first
    metrics.as_dict()                    # plain JSON-able data (reports, the dashboard)

Every figure counts rows in the half-open window ``[since, until)``, each by its own timestamp
(a reply by when it was given, a rating by when it was last changed, a handoff by when it
happened). Counts, sums and groups per bucket are SQL aggregates; percentiles and the VADER
sentiment are computed in Python, since SQLite has no percentile function and VADER is not SQL.

Definitions (also in docs/monitoring.md):

* **answer / fallback / clarify rate**: replies of that kind over all the bot's replies except
  smalltalk (greetings and thanks are not questions).
* **handoff rate**: conversations started in the window that were handed to a person (at any time)
  over the conversations started in the window.
* **deflection**: among conversations started in the window, at least `deflection_window` before
  `until` and answered by the bot at least once, those where no person took over (no handoff to a
  human and no agent message) within `deflection_window` of the start and that are closed or were
  idle (no message) when the window ended.
* **CSAT**: thumbs up over thumbs up + down, overall and split by whether the rated reply's
  conversation stayed with the bot ("bot only") or was handed to a person ("bot then human").
* **sentiment**: the mean VADER compound score (-1..1) of the customers' messages.
* **time to human**: from a bot→human handoff to the first agent message after it, in seconds;
  handoffs with no agent message yet are counted as unanswered.
* **latency**: the bot's per-reply latency (inbound message to reply decided), in ms.
* **never**: what should never happen: the bot replied (other than the handoff notice) while a
  human owned the conversation; an inbound message got more than one reply.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    case,
    exists,
    func,
    literal,
    select,
)

from bot.storage.tables import metadata

if TYPE_CHECKING:
    from bot.storage.store import Store

__all__ = [
    "BUCKETS",
    "Anomalies",
    "Bucket",
    "BucketName",
    "Csat",
    "Deflection",
    "Metrics",
    "Percentiles",
    "Ratio",
    "compute",
    "percentile",
]

BucketName = Literal["hour", "day", "week"]
BUCKETS: Final[tuple[str, ...]] = ("hour", "day", "week")

_CONVERSATION: Table = metadata.tables["conversation"]
_MESSAGE: Table = metadata.tables["message"]
_REPLY: Table = metadata.tables["reply"]
_FEEDBACK: Table = metadata.tables["feedback"]
_HANDOFF: Table = metadata.tables["handoff"]

#: Reply kinds that are not counted as attempts to answer a question.
_NOT_QUESTIONS: Final = ("smalltalk",)
_EMPTY: Mapping[str, int] = MappingProxyType({})


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0..100) of `values` with linear interpolation; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True)
class Ratio:
    """`part` out of `whole`; `rate` is None when `whole` is 0."""

    part: int
    whole: int

    @property
    def rate(self) -> float | None:
        return _ratio(self.part, self.whole)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """The distribution of a duration: how many values and their percentiles (None if none)."""

    count: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 90),
            percentile(values, 95),
            percentile(values, 99),
            max(values) if values else None,
        )


@dataclass(frozen=True, slots=True)
class Csat:
    """Thumbs up over rated replies: overall, bot-only conversations, bot-then-human ones."""

    overall: Ratio
    bot_only: Ratio
    bot_then_human: Ratio


@dataclass(frozen=True, slots=True)
class Deflection:
    """Conversations the bot settled without a person (see the module docstring)."""

    eligible: int
    deflected: int

    @property
    def rate(self) -> float | None:
        return _ratio(self.deflected, self.eligible)


@dataclass(frozen=True, slots=True)
class Anomalies:
    """Counts of what should never happen; both should be 0."""

    bot_spoke_while_human_owned: int
    duplicate_replies: int

    @property
    def total(self) -> int:
        return self.bot_spoke_while_human_owned + self.duplicate_replies


@dataclass(frozen=True, slots=True)
class Bucket:
    """The figures of one hour, day or week (`start` is its first instant, UTC)."""

    start: datetime
    conversations: int = 0
    messages: int = 0
    replies: int = 0
    answers: int = 0
    fallbacks: int = 0
    handoffs: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    sentiment: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None

    @property
    def answer_rate(self) -> float | None:
        return _ratio(self.answers, self.replies)

    @property
    def csat(self) -> float | None:
        return _ratio(self.thumbs_up, self.thumbs_up + self.thumbs_down)


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures of one window; see the module docstring for each definition.

    Attributes:
        since, until: the window ``[since, until)``, aware UTC.
        bucket: the width of each entry of `series`.
        deflection_window: how long a person may stay away for a conversation to count as
            deflected.
        conversations: conversations started.
        messages: customers' messages received.
        replies: the bot's replies.
        replies_by_kind: replies per kind ("answer", "fallback", ...).
        handoffs: bot→human handoffs.
        handed_over_conversations: conversations started in the window and handed to a person.
        feedback: ratings, `{"up": n, "down": m}`.
        feedback_reasons: the reasons given with 👎, per reason.
        feedback_by_platform: ratings per platform.
        sentiment: the mean VADER compound of customers' messages, None without messages.
        time_to_human_s: seconds from handoff to the first agent message.
        unanswered_handoffs: handoffs no agent has written after yet.
        latency_ms: per-reply latency.
        series: per-bucket figures, oldest first, one per bucket of the window.
    """

    since: datetime
    until: datetime
    bucket: BucketName
    deflection_window: timedelta
    conversations: int
    messages: int
    replies: int
    replies_by_kind: Mapping[str, int]
    handoffs: int
    handed_over_conversations: int
    deflection: Deflection
    csat: Csat
    feedback: Mapping[str, int]
    feedback_reasons: Mapping[str, int]
    feedback_by_platform: Mapping[str, int]
    sentiment: float | None
    time_to_human_s: Percentiles
    unanswered_handoffs: int
    latency_ms: Percentiles
    anomalies: Anomalies
    series: tuple[Bucket, ...] = field(default=())

    @property
    def questions(self) -> int:
        """Replies that attempted a question (all but smalltalk): the rates' denominator."""
        return self.replies - sum(self.replies_by_kind.get(k, 0) for k in _NOT_QUESTIONS)

    @property
    def answer_rate(self) -> float | None:
        return _ratio(self.replies_by_kind.get("answer", 0), self.questions)

    @property
    def fallback_rate(self) -> float | None:
        return _ratio(self.replies_by_kind.get("fallback", 0), self.questions)

    @property
    def clarify_rate(self) -> float | None:
        return _ratio(self.replies_by_kind.get("clarify", 0), self.questions)

    @property
    def handoff_rate(self) -> float | None:
        return _ratio(self.handed_over_conversations, self.conversations)

    def summary(self) -> dict[str, float | int | None]:
        """The headline figures, flat: name → value (rates 0..1, durations ms or s)."""
        return {
            "conversations": self.conversations,
            "messages": self.messages,
            "replies": self.replies,
            "answer_rate": self.answer_rate,
            "fallback_rate": self.fallback_rate,
            "clarify_rate": self.clarify_rate,
            "handoff_rate": self.handoff_rate,
            "handoffs": self.handoffs,
            "deflection_rate": self.deflection.rate,
            "deflection_eligible": self.deflection.eligible,
            "csat": self.csat.overall.rate,
            "csat_bot_only": self.csat.bot_only.rate,
            "csat_bot_then_human": self.csat.bot_then_human.rate,
            "thumbs_up": self.feedback.get("up", 0),
            "thumbs_down": self.feedback.get("down", 0),
            "sentiment": self.sentiment,
            "time_to_human_p50_s": self.time_to_human_s.p50,
            "time_to_human_p90_s": self.time_to_human_s.p90,
            "unanswered_handoffs": self.unanswered_handoffs,
            "latency_p50_ms": self.latency_ms.p50,
            "latency_p90_ms": self.latency_ms.p90,
            "latency_p95_ms": self.latency_ms.p95,
            "latency_p99_ms": self.latency_ms.p99,
            "bot_spoke_while_human_owned": self.anomalies.bot_spoke_while_human_owned,
            "duplicate_replies": self.anomalies.duplicate_replies,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able data (datetimes as ISO strings, rates included)."""
        data: dict[str, Any] = {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "bucket": self.bucket,
            "deflection_window": self.deflection_window.total_seconds(),
        }
        for name in ("conversations", "messages", "replies", "handoffs"):
            data[name] = getattr(self, name)
        data["handed_over_conversations"] = self.handed_over_conversations
        data["unanswered_handoffs"] = self.unanswered_handoffs
        data["sentiment"] = self.sentiment
        for name in ("replies_by_kind", "feedback", "feedback_reasons", "feedback_by_platform"):
            data[name] = dict(getattr(self, name))
        for name in ("deflection", "anomalies", "time_to_human_s", "latency_ms"):
            data[name] = asdict(getattr(self, name))
        data["csat"] = {
            name: asdict(getattr(self.csat, name))
            for name in ("overall", "bot_only", "bot_then_human")
        }
        data["deflection"]["rate"] = self.deflection.rate
        data["anomalies"]["total"] = self.anomalies.total
        for name in ("overall", "bot_only", "bot_then_human"):
            data["csat"][name]["rate"] = getattr(self.csat, name).rate
        data["series"] = [
            {
                **{k: v for k, v in asdict(b).items() if k != "start"},
                "start": b.start.isoformat(),
                "answer_rate": b.answer_rate,
                "csat": b.csat,
            }
            for b in self.series
        ]
        data["summary"] = self.summary()
        return data


# Computation ------------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _bucket_start(value: datetime, bucket: BucketName) -> datetime:
    value = _aware(value)
    if bucket == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    return day


def _bucket_expr(connection: Connection, column: Any, bucket: BucketName) -> ColumnElement[str]:
    """The SQL label ``YYYY-MM-DD HH:00:00`` of the UTC bucket a timestamp falls in."""
    if connection.dialect.name == "postgresql":
        unit = {"hour": "hour", "day": "day", "week": "week"}[bucket]
        utc = func.timezone("UTC", column)
        return func.to_char(func.date_trunc(unit, utc), "YYYY-MM-DD HH24:00:00")
    # SQLite keeps the UTC value without a zone (`UTCDateTime`).
    if bucket == "hour":
        return func.strftime("%Y-%m-%d %H:00:00", column)
    if bucket == "day":
        return func.strftime("%Y-%m-%d 00:00:00", column)
    # 'weekday 0' moves to the next Sunday (or stays on one); six days back is that week's Monday.
    return func.strftime("%Y-%m-%d 00:00:00", column, "weekday 0", "-6 days")


def _label_start(label: str) -> datetime:
    return datetime.fromisoformat(label).replace(tzinfo=UTC)


def _in(column: Any, since: datetime, until: datetime) -> ColumnElement[bool]:
    return and_(column >= since, column < until)


def _count_by(connection: Connection, query: Any) -> dict[Any, int]:
    """Rows of (key, count) as a dict."""
    return {key: int(count) for key, count in connection.execute(query).all()}


def _human_conversations() -> ColumnElement[bool]:
    """The conversation (of the row at hand) was ever handed to a person."""
    return exists().where(
        _HANDOFF.c.conversation_id == _CONVERSATION.c.id, _HANDOFF.c.to_owner == "human"
    )


def compute(
    store: Store,
    *,
    since: datetime,
    until: datetime,
    bucket: BucketName = "day",
    deflection_window: timedelta = timedelta(hours=24),
) -> Metrics:
    """The figures of the window ``[since, until)`` from the store's database.

    Args:
        store: the bot's store (only its engine is used; nothing is written).
        since: the window's start; naive datetimes are taken as UTC.
        until: the window's end (exclusive).
        bucket: the width of the entries of `Metrics.series`: "hour", "day" or "week".
        deflection_window: a conversation with no person in it this long after it started, and
            closed or idle, counts as deflected.

    Raises:
        ValueError: `until` is not after `since`, an unknown bucket, or a negative window.
        StorageError: the database could not be read.
    """
    since, until = _aware(since), _aware(until)
    if until <= since:
        raise ValueError(f"the window must end after it starts: {since} .. {until}")
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    if deflection_window < timedelta(0):
        raise ValueError("the deflection window cannot be negative")
    from sqlalchemy.exc import SQLAlchemyError

    from bot.storage import db

    try:
        with store.engine.connect() as connection:
            return _compute(connection, since, until, bucket, deflection_window)
    except SQLAlchemyError as exc:
        raise db.storage_error(exc, store.engine.url, "compute the metrics") from exc


def _compute(
    connection: Connection,
    since: datetime,
    until: datetime,
    bucket: BucketName,
    window: timedelta,
) -> Metrics:
    conv, msg, reply, fb, hand = _CONVERSATION, _MESSAGE, _REPLY, _FEEDBACK, _HANDOFF
    series: dict[datetime, dict[str, Any]] = defaultdict(dict)

    def per_bucket(name: str, table: Table, column: Any, *where: ColumnElement[bool]) -> int:
        label = _bucket_expr(connection, column, bucket)
        query = (
            select(label, func.count())
            .select_from(table)
            .where(_in(column, since, until), *where)
            .group_by(label)
        )
        total = 0
        for key, count in connection.execute(query).all():
            series[_label_start(key)][name] = int(count)
            total += int(count)
        return total

    conversations = per_bucket("conversations", conv, conv.c.created_at)
    messages = per_bucket("messages", msg, msg.c.created_at, msg.c.role == "user")
    replies = per_bucket("replies", reply, reply.c.created_at)
    per_bucket("answers", reply, reply.c.created_at, reply.c.kind == "answer")
    per_bucket("fallbacks", reply, reply.c.created_at, reply.c.kind == "fallback")
    handoffs = per_bucket(
        "handoffs", hand, hand.c.created_at, hand.c.to_owner == "human", hand.c.from_owner == "bot"
    )
    per_bucket("thumbs_up", fb, fb.c.updated_at, fb.c.value == "up")
    per_bucket("thumbs_down", fb, fb.c.updated_at, fb.c.value == "down")

    by_kind = _count_by(
        connection,
        select(reply.c.kind, func.count())
        .where(_in(reply.c.created_at, since, until))
        .group_by(reply.c.kind),
    )
    handed_over = int(
        connection.execute(
            select(func.count())
            .select_from(conv)
            .where(_in(conv.c.created_at, since, until), _human_conversations())
        ).scalar_one()
    )

    # Feedback: split by whether the rated reply's conversation ever went to a person.
    human = case((_human_conversations(), literal("human")), else_=literal("bot"))
    rated = (
        select(human, fb.c.value, func.count())
        .select_from(
            fb.join(reply, reply.c.id == fb.c.reply_id).join(
                conv, conv.c.id == reply.c.conversation_id
            )
        )
        .where(_in(fb.c.updated_at, since, until))
        .group_by(human, fb.c.value)
    )
    thumbs: dict[tuple[str, str], int] = {
        (who, value): int(n) for who, value, n in connection.execute(rated).all()
    }

    def csat_of(*who: str) -> Ratio:
        up = sum(thumbs.get((w, "up"), 0) for w in who)
        down = sum(thumbs.get((w, "down"), 0) for w in who)
        return Ratio(up, up + down)

    csat = Csat(csat_of("bot", "human"), csat_of("bot"), csat_of("human"))
    feedback = {
        "up": csat.overall.part,
        "down": csat.overall.whole - csat.overall.part,
    }
    reasons = _count_by(
        connection,
        select(fb.c.reason, func.count())
        .where(_in(fb.c.updated_at, since, until), fb.c.value == "down", fb.c.reason.is_not(None))
        .group_by(fb.c.reason),
    )
    platforms = _count_by(
        connection,
        select(fb.c.platform, func.count())
        .where(_in(fb.c.updated_at, since, until))
        .group_by(fb.c.platform),
    )

    sentiment = _sentiment(connection, since, until, bucket, series)
    latency = _latency(connection, since, until, bucket, series)
    time_to_human, unanswered = _time_to_human(connection, since, until)
    deflection = _deflection(connection, since, until, window)
    anomalies = _anomalies(connection, since, until)

    return Metrics(
        since=since,
        until=until,
        bucket=bucket,
        deflection_window=window,
        conversations=conversations,
        messages=messages,
        replies=replies,
        replies_by_kind=MappingProxyType(dict(sorted(by_kind.items()))),
        handoffs=handoffs,
        handed_over_conversations=handed_over,
        deflection=deflection,
        csat=csat,
        feedback=MappingProxyType(feedback),
        feedback_reasons=MappingProxyType(dict(sorted(reasons.items()))) if reasons else _EMPTY,
        feedback_by_platform=MappingProxyType(dict(sorted(platforms.items()))),
        sentiment=sentiment,
        time_to_human_s=time_to_human,
        unanswered_handoffs=unanswered,
        latency_ms=latency,
        anomalies=anomalies,
        series=_series(series, since, until, bucket),
    )


def _series(
    values: Mapping[datetime, Mapping[str, Any]],
    since: datetime,
    until: datetime,
    bucket: BucketName,
) -> tuple[Bucket, ...]:
    """One `Bucket` per bucket of the window, empty ones included (charts need the gaps)."""
    out: list[Bucket] = []
    start = _bucket_start(since, bucket)
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[
        bucket
    ]
    # Bounded: a year of hours is 8760 buckets; wider hourly windows fall back to days.
    while start < until and len(out) < 10_000:
        out.append(Bucket(start=start, **values.get(start, {})))
        start += step
    return tuple(out)


def _sentiment(
    connection: Connection,
    since: datetime,
    until: datetime,
    bucket: BucketName,
    series: dict[datetime, dict[str, Any]],
) -> float | None:
    from policies.sentiment import compound

    query = select(_MESSAGE.c.created_at, _MESSAGE.c.text).where(
        _in(_MESSAGE.c.created_at, since, until), _MESSAGE.c.role == "user"
    )
    scores: dict[datetime, list[float]] = defaultdict(list)
    every: list[float] = []
    for created, text in connection.execute(query):
        if not text:
            continue
        score = compound(text)
        scores[_bucket_start(created, bucket)].append(score)
        every.append(score)
    for start, values in scores.items():
        series[start]["sentiment"] = sum(values) / len(values)
    return sum(every) / len(every) if every else None


def _latency(
    connection: Connection,
    since: datetime,
    until: datetime,
    bucket: BucketName,
    series: dict[datetime, dict[str, Any]],
) -> Percentiles:
    query = select(_REPLY.c.created_at, _REPLY.c.latency_ms).where(
        _in(_REPLY.c.created_at, since, until), _REPLY.c.latency_ms.is_not(None)
    )
    per: dict[datetime, list[float]] = defaultdict(list)
    every: list[float] = []
    for created, latency in connection.execute(query):
        per[_bucket_start(created, bucket)].append(float(latency))
        every.append(float(latency))
    for start, values in per.items():
        series[start]["latency_p50_ms"] = percentile(values, 50)
        series[start]["latency_p95_ms"] = percentile(values, 95)
    return Percentiles.of(every)


def _time_to_human(
    connection: Connection, since: datetime, until: datetime
) -> tuple[Percentiles, int]:
    hand, msg = _HANDOFF, _MESSAGE
    first_agent = (
        select(func.min(msg.c.created_at))
        .where(
            msg.c.conversation_id == hand.c.conversation_id,
            msg.c.role == "agent",
            msg.c.created_at >= hand.c.created_at,
        )
        .scalar_subquery()
    )
    query = select(hand.c.created_at, first_agent).where(
        _in(hand.c.created_at, since, until), hand.c.to_owner == "human", hand.c.from_owner == "bot"
    )
    waits: list[float] = []
    unanswered = 0
    for handed, answered in connection.execute(query):
        if answered is None:
            unanswered += 1
            continue
        # The scalar subquery loses the column type: SQLite gives back a string.
        answered_at = _as_datetime(answered)
        waits.append(max((answered_at - _aware(handed)).total_seconds(), 0.0))
    return Percentiles.of(waits), unanswered


def _as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _aware(value)


def _deflection(
    connection: Connection, since: datetime, until: datetime, window: timedelta
) -> Deflection:
    conv, msg, hand, reply = _CONVERSATION, _MESSAGE, _HANDOFF, _REPLY
    latest_start = until - window
    if latest_start <= since:
        return Deflection(0, 0)
    first_human = (
        select(func.min(hand.c.created_at))
        .where(hand.c.conversation_id == conv.c.id, hand.c.to_owner == "human")
        .scalar_subquery()
    )
    first_agent = (
        select(func.min(msg.c.created_at))
        .where(msg.c.conversation_id == conv.c.id, msg.c.role == "agent")
        .scalar_subquery()
    )
    last_message = (
        select(func.max(msg.c.created_at))
        .where(msg.c.conversation_id == conv.c.id)
        .scalar_subquery()
    )
    answered = exists().where(reply.c.conversation_id == conv.c.id, reply.c.kind != "smalltalk")
    query = select(conv.c.created_at, conv.c.status, first_human, first_agent, last_message).where(
        _in(conv.c.created_at, since, latest_start), answered
    )
    eligible = deflected = 0
    for created, status, handed, agent, last in connection.execute(query):
        eligible += 1
        deadline = _aware(created) + window
        human_times = [_as_datetime(t) for t in (handed, agent) if t is not None]
        if any(t < deadline for t in human_times):
            continue
        idle = last is None or _as_datetime(last) < until - window
        if status == "closed" or idle:
            deflected += 1
    return Deflection(eligible, deflected)


def _anomalies(connection: Connection, since: datetime, until: datetime) -> Anomalies:
    reply, hand = _REPLY, _HANDOFF
    # The owner a reply was given under: the newest owner change before it.
    owner_then = (
        select(hand.c.to_owner)
        .where(
            hand.c.conversation_id == reply.c.conversation_id,
            hand.c.created_at <= reply.c.created_at,
        )
        .order_by(hand.c.created_at.desc(), hand.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    spoke = connection.execute(
        select(func.count())
        .select_from(reply)
        .where(
            _in(reply.c.created_at, since, until),
            reply.c.kind != "handoff",
            owner_then == "human",
        )
    ).scalar_one()
    per_message = (
        select(reply.c.message_id, func.count().label("n"))
        .where(_in(reply.c.created_at, since, until), reply.c.message_id.is_not(None))
        .group_by(reply.c.message_id)
        .having(func.count() > 1)
        .subquery()
    )
    duplicates = connection.execute(
        select(func.coalesce(func.sum(per_message.c.n - 1), 0))
    ).scalar_one()
    return Anomalies(int(spoke), int(duplicates))
