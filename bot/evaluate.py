"""Offline evaluation and calibration on labelled queries, through the live decision path.

Queries file (JSONL), one query a line: ``text``; ``expected``, the id of the entry that answers
it or null when nothing should; optional ``history``, a list of ``{"role": "user"|"bot",
"text": ...}`` oldest first.

The bot *answers with entry X* when its decision is ``answer`` and its top source is X; every
other decision is an abstention.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.engine import Responder
from bot.errors import IngestError
from bot.model import ReplyKind, Role, Turn
from knowledge.calibration import (
    DEFAULT_MAX_MISSED,
    DEFAULT_MIN_OOS_RECALL,
    ConfidenceModel,
    Sample,
    fit,
)

if TYPE_CHECKING:
    from knowledge.feedback import FeedbackConfig

WARMUP_QUERIES = 5


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    expected: str | None
    history: tuple[Turn, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    query: Query
    kind: ReplyKind
    answered_id: str | None
    ranked_ids: tuple[str, ...]
    confidence: float | None
    latency_ms: float
    features: tuple[float, ...] | None
    #: The best candidate was an entry that declines (the bot fell back whatever the threshold).
    declined: bool = False

    @property
    def correct(self) -> bool:
        if self.query.expected is None:
            return self.answered_id is None
        return self.answered_id == self.query.expected

    @property
    def rank(self) -> int | None:
        """1-based rank of the expected entry among the retrieved ones."""
        if self.query.expected is None or self.query.expected not in self.ranked_ids:
            return None
        return self.ranked_ids.index(self.query.expected) + 1


def load_queries(path: Path | str) -> list[Query]:
    """Read a queries file; a malformed line raises `IngestError` with its line number."""
    path = Path(path)
    queries: list[Query] = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise IngestError(path, f"cannot read queries: {e}") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise IngestError(path, f"not valid JSON ({e.msg})", number) from e
        if not isinstance(data, dict):
            raise IngestError(path, "each line must be a JSON object", number)
        text, expected = data.get("text"), data.get("expected")
        if not isinstance(text, str) or not text.strip():
            raise IngestError(path, '"text" must be a non-empty string', number)
        if expected is not None and not isinstance(expected, str):
            raise IngestError(path, '"expected" must be an entry id or null', number)
        history: list[Turn] = []
        raw_history = data.get("history")
        if raw_history is not None and not isinstance(raw_history, list):
            raise IngestError(path, '"history" must be a list of turns', number)
        for turn in raw_history or []:
            if (
                not isinstance(turn, dict)
                or turn.get("role") not in ("user", "bot")
                or not isinstance(turn.get("text"), str)
            ):
                raise IngestError(
                    path, 'history items must be {"role": "user"|"bot", "text": str}', number
                )
            history.append(Turn(Role(turn["role"]), turn["text"]))
        queries.append(Query(text, expected, tuple(history)))
    if not queries:
        raise IngestError(path, "no queries in file")
    return queries


def run_queries(
    responder: Responder,
    queries: Sequence[Query],
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Run each query through the decision path; the first few also warm it up untimed."""
    for query in queries[:WARMUP_QUERIES]:
        responder.respond(query.text, query.history)
    outcomes: list[Outcome] = []
    for query in queries:
        started = time.perf_counter()
        reply, trace = responder.respond(query.text, query.history)
        latency = (time.perf_counter() - started) * 1000
        answered = reply.sources[0].id if reply.kind is ReplyKind.ANSWER and reply.sources else None
        ranked = (
            tuple(dict.fromkeys(c.entry.id for c in trace.retrieval.candidates))
            if trace.retrieval
            else ()
        )
        outcomes.append(
            Outcome(
                query,
                reply.kind,
                answered,
                ranked,
                reply.confidence,
                latency,
                trace.retrieval.features if trace.retrieval else None,
                bool(
                    trace.retrieval and trace.retrieval.top and trace.retrieval.top.entry.declines
                ),
            )
        )
        if progress:
            progress(1)
    return outcomes


def calibrate(
    responder: Responder,
    queries: Sequence[Query],
    objective: str = "recall",
    max_missed: float = DEFAULT_MAX_MISSED,
    progress: Callable[[int], None] | None = None,
    min_oos_recall: float = DEFAULT_MIN_OOS_RECALL,
) -> ConfidenceModel:
    """Fit the confidence model and threshold on labelled queries."""
    outcomes = run_queries(responder, queries, progress)
    samples = [
        Sample(
            o.features,
            o.query.expected is not None,
            bool(o.ranked_ids) and o.ranked_ids[0] == o.query.expected,
            o.declined,
        )
        for o in outcomes
        if o.features is not None
    ]
    return fit(samples, objective, max_missed, min_oos_recall)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def metrics(outcomes: Iterable[Outcome], threshold: float) -> dict[str, Any]:
    """The figures `supportbot eval` prints (see the module doc for definitions)."""
    outcomes = list(outcomes)
    in_scope = [o for o in outcomes if o.query.expected is not None]
    oos = [o for o in outcomes if o.query.expected is None]
    answered = [o for o in outcomes if o.answered_id is not None]
    ranks = [o.rank for o in in_scope]

    def share(part: int, whole: int) -> float:
        return round(part / whole, 4) if whole else 0.0

    latencies = [o.latency_ms for o in outcomes]
    return {
        "queries": len(outcomes),
        "in_scope": len(in_scope),
        "out_of_scope": len(oos),
        "threshold": round(threshold, 4),
        "accuracy": share(sum(o.correct for o in outcomes), len(outcomes)),
        "in_scope_accuracy": share(sum(o.correct for o in in_scope), len(in_scope)),
        "oos_recall": share(sum(o.correct for o in oos), len(oos)),
        "answered_precision": share(
            sum(o.answered_id == o.query.expected for o in answered), len(answered)
        ),
        "recall_at_1": share(sum(r == 1 for r in ranks), len(in_scope)),
        "recall_at_5": share(sum(r is not None and r <= 5 for r in ranks), len(in_scope)),
        "mrr": round(statistics.fmean([1 / r if r else 0.0 for r in ranks]), 4) if ranks else 0.0,
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.50), 3),
            "p95": round(_percentile(latencies, 0.95), 3),
            "p99": round(_percentile(latencies, 0.99), 3),
        },
    }


# Feedback replay ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """`feedback_replay`'s figures: half B before and after feedback on half A.

    Attributes:
        before: `metrics` of half B with no feedback.
        after: `metrics` of half B with half A's simulated feedback applied.
        rated: half A's queries that gave feedback.
        endorsed: ratings +1 (👍 on a right top-1, or the right entry endorsed after a 👎).
        rejected: ratings -1 (👎 on a wrong top-1, or on an answer to an out-of-scope query).
        half_a, half_b: the sizes of the halves.
    """

    before: dict[str, Any]
    after: dict[str, Any]
    rated: int
    endorsed: int
    rejected: int
    half_a: int
    half_b: int

    def as_dict(self) -> dict[str, Any]:
        delta = {
            key: round(self.after[key] - self.before[key], 4)
            for key in self.before
            if isinstance(self.before[key], float) and key != "threshold"
        }
        return {
            "half_a": self.half_a,
            "half_b": self.half_b,
            "rated": self.rated,
            "endorsed": self.endorsed,
            "rejected": self.rejected,
            "before": self.before,
            "after": self.after,
            "delta": delta,
        }


def split_halves(queries: Sequence[Query], seed: int = 0) -> tuple[list[Query], list[Query]]:
    """Shuffle the queries with `seed` and cut them in two halves (A, B)."""
    import random

    order = list(queries)
    random.Random(seed).shuffle(order)
    middle = len(order) // 2
    return order[:middle], order[middle:]


def feedback_replay(
    responder: Responder,
    queries: Sequence[Query],
    *,
    seed: int = 0,
    config: FeedbackConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Show what feedback does to ranking and answers: rate half the queries, measure the rest.

    The queries are shuffled (`seed`) and split in halves A and B. Half B is measured with no
    feedback; then every query of half A is run and rated as a customer and a reviewer would:

    * in-scope, top-1 right: 👍 on it (+1);
    * in-scope, top-1 wrong: 👎 on it (-1) and the right entry endorsed (+1), as when the
      customer picks the right topic after a 👎 or a reviewer names the expected entry;
    * out of scope and answered anyway: 👎 on the answer (-1).

    Half B is then measured again with those ratings in the retriever's feedback index: they
    move the ranking (`Candidate.feedback`) and, through the ``feedback`` feature, the
    confidence (`knowledge.calibration.with_feedback`), so both recall@1 and the share
    answered right can change. The
    simulation is optimistic about volume (every question of half A is rated; real customers
    rate a few percent of answers) but not about overlap: no query of B is in A.

    The responder's own feedback index is put back afterwards.
    """
    from knowledge.feedback import FeedbackIndex

    half_a, half_b = split_halves(queries, seed)
    retriever = responder.retriever
    saved = retriever.feedback
    try:
        retriever.feedback = None
        before = metrics(run_queries(responder, half_b, progress), responder.confidence.threshold)
        index = FeedbackIndex(config)
        endorsed = rejected = rated = 0
        for number, query in enumerate(half_a):
            reply, trace = responder.respond(query.text, query.history)
            retrieval = trace.retrieval
            if progress:
                progress(1)
            if retrieval is None or retrieval.vector is None or not retrieval.candidates:
                continue
            top = retrieval.candidates[0].entry.id
            ratings: list[tuple[str, int]] = []
            if query.expected is None:
                if reply.kind is ReplyKind.ANSWER and reply.sources:
                    ratings.append((reply.sources[0].id, -1))
            elif top == query.expected:
                ratings.append((top, 1))
            else:
                ratings += [(top, -1), (query.expected, 1)]
            for entry_id, sign in ratings:
                index.set((number, entry_id), retrieval.vector, entry_id, sign)
                endorsed += sign > 0
                rejected += sign < 0
            rated += bool(ratings)
        retriever.feedback = index
        after = metrics(run_queries(responder, half_b, progress), responder.confidence.threshold)
    finally:
        retriever.feedback = saved
    return ReplayResult(before, after, rated, endorsed, rejected, len(half_a), len(half_b))
