"""Offline evaluation: the queries file format, the metric definitions, and a run on the sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.engine import Responder
from bot.errors import IngestError
from bot.evaluate import Outcome, Query, load_queries, metrics, run_queries
from bot.model import ReplyKind, Role, Turn
from bot.service import confidence_model
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever

SAMPLE_QUERIES = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "queries.jsonl"

METRIC_KEYS = {
    "queries",
    "in_scope",
    "out_of_scope",
    "threshold",
    "accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "answered_precision",
    "recall_at_1",
    "recall_at_5",
    "mrr",
    "latency_ms",
}


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"text": "How do I reset my password?", "expected": "reset-password"}'


# load_queries ----------------------------------------------------------------------------------


def test_load_queries_reads_text_expected_and_history(tmp_path: Path) -> None:
    path = write(
        tmp_path / "queries.jsonl",
        GOOD,
        "",
        '{"text": "weather?", "expected": null}',
        json.dumps(
            {
                "text": "and for business?",
                "expected": "pricing-business",
                "history": [
                    {"role": "user", "text": "How much is Plus?"},
                    {"role": "bot", "text": "$8 a month."},
                ],
                "note": "extra keys are ignored",
            }
        ),
        '{"text": "no expected key"}',
    )

    queries = load_queries(path)

    assert queries == [
        Query("How do I reset my password?", "reset-password"),
        Query("weather?", None),
        Query(
            "and for business?",
            "pricing-business",
            (Turn(Role.USER, "How much is Plus?"), Turn(Role.BOT, "$8 a month.")),
        ),
        Query("no expected key", None),
    ]


def test_load_queries_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_text(GOOD + "\n", encoding="utf-8-sig")

    assert load_queries(path) == [Query("How do I reset my password?", "reset-password")]


BAD_LINES = [
    pytest.param('{"text": "unterminated', "not valid JSON", id="bad-json"),
    pytest.param('["a", "list"]', "must be a JSON object", id="not-an-object"),
    pytest.param(
        '{"expected": "reset-password"}', '"text" must be a non-empty string', id="no-text"
    ),
    pytest.param(
        '{"text": "   ", "expected": null}', '"text" must be a non-empty', id="blank-text"
    ),
    pytest.param('{"text": 12, "expected": null}', '"text" must be a non-empty', id="text-number"),
    pytest.param(
        '{"text": "q", "expected": 3}', '"expected" must be an entry id', id="expected-int"
    ),
    pytest.param(
        '{"text": "q", "expected": ["a"]}', '"expected" must be an entry id', id="expected-list"
    ),
    pytest.param(
        '{"text": "q", "expected": null, "history": [{"role": "system", "text": "x"}]}',
        "history items",
        id="history-bad-role",
    ),
    pytest.param(
        '{"text": "q", "expected": null, "history": [{"role": "user"}]}',
        "history items",
        id="history-no-text",
    ),
    pytest.param(
        '{"text": "q", "expected": null, "history": [{"role": "bot", "text": 5}]}',
        "history items",
        id="history-text-number",
    ),
    pytest.param(
        '{"text": "q", "expected": null, "history": ["hello"]}', "history items", id="history-str"
    ),
    pytest.param(
        '{"text": "q", "expected": null, "history": "hello"}', '"history"', id="history-string"
    ),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_load_queries_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    # Line 2 is blank: line numbers count every line of the file.
    path = write(tmp_path / "queries.jsonl", GOOD, "", line, GOOD)

    with pytest.raises(IngestError) as caught:
        load_queries(path)

    assert caught.value.line == 3
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("history", ["5", "true"])
def test_load_queries_rejects_a_non_list_history(tmp_path: Path, history: str) -> None:
    path = write(tmp_path / "q.jsonl", f'{{"text": "q", "expected": null, "history": {history}}}')

    with pytest.raises(IngestError) as caught:
        load_queries(path)

    assert caught.value.line == 1


def test_load_queries_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.jsonl", "", "   ")

    with pytest.raises(IngestError, match="no queries"):
        load_queries(path)


def test_load_queries_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read queries"):
        load_queries(tmp_path / "missing.jsonl")


def test_load_queries_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "caf\xe9", "expected": null}\n'.encode("latin-1"))

    with pytest.raises(IngestError, match="cannot read queries"):
        load_queries(path)


# metrics ---------------------------------------------------------------------------------------


def outcome(
    expected: str | None,
    answered: str | None,
    ranked: tuple[str, ...],
    latency: float,
    kind: ReplyKind | None = None,
) -> Outcome:
    if kind is None:
        kind = ReplyKind.ANSWER if answered else ReplyKind.FALLBACK
    return Outcome(
        Query(f"query for {expected}", expected),
        kind,
        answered,
        ranked,
        0.5,
        latency,
        (0.5, 0.5, 0.1, 0.2, 0.0),
    )


OUTCOMES = [
    # in scope, answered right, expected ranked 1st
    outcome("a", "a", ("a", "b"), 10.0),
    # in scope, answered wrong, expected ranked 2nd
    outcome("b", "c", ("c", "b"), 20.0),
    # in scope, abstained, expected ranked 6th (outside the top 5)
    outcome("d", None, ("x", "y", "z", "w", "v", "d"), 30.0),
    # in scope, clarified (an abstention), expected ranked 1st
    outcome("e", None, ("e", "f"), 40.0, ReplyKind.CLARIFY),
    # out of scope, abstained: right
    outcome(None, None, ("a",), 50.0),
    # out of scope, answered: wrong
    outcome(None, "a", ("a",), 60.0),
    # in scope, nothing retrieved at all (e.g. smalltalk)
    outcome("f", None, (), 70.0, ReplyKind.SMALLTALK),
]


def test_outcome_properties() -> None:
    assert [o.correct for o in OUTCOMES] == [True, False, False, False, True, False, False]
    assert [o.rank for o in OUTCOMES] == [1, 2, 6, 1, None, None, None]


def test_metrics_definitions() -> None:
    result = metrics(OUTCOMES, threshold=0.123456)

    assert set(result) == METRIC_KEYS
    assert result["queries"] == 7
    assert result["in_scope"] == 5
    assert result["out_of_scope"] == 2
    assert result["threshold"] == 0.1235
    # right answers plus right abstentions, over every query
    assert result["accuracy"] == round(2 / 7, 4)
    # in-scope queries answered with their entry
    assert result["in_scope_accuracy"] == round(1 / 5, 4)
    # out-of-scope queries the bot abstained on
    assert result["oos_recall"] == round(1 / 2, 4)
    # of the answers given (a, c, a), the right ones
    assert result["answered_precision"] == round(1 / 3, 4)
    # expected entry at rank 1 (twice) / within the top 5 (three times), over in-scope queries
    assert result["recall_at_1"] == round(2 / 5, 4)
    assert result["recall_at_5"] == round(3 / 5, 4)
    assert result["mrr"] == round((1 + 1 / 2 + 1 / 6 + 1 + 0) / 5, 4)
    # linear interpolation between the closest ranks
    assert result["latency_ms"] == {"p50": 40.0, "p95": 67.0, "p99": 69.4}


def test_metrics_of_a_single_outcome() -> None:
    result = metrics([outcome("a", "a", ("a",), 12.3456)], threshold=0.5)

    assert result["accuracy"] == result["in_scope_accuracy"] == result["answered_precision"] == 1.0
    assert result["oos_recall"] == 0.0  # no out-of-scope queries: 0, not a division error
    assert result["recall_at_1"] == result["recall_at_5"] == result["mrr"] == 1.0
    assert result["latency_ms"] == {"p50": 12.346, "p95": 12.346, "p99": 12.346}


def test_metrics_of_nothing_are_zero() -> None:
    result = metrics([], threshold=0.4)

    assert set(result) == METRIC_KEYS
    assert result["queries"] == result["in_scope"] == result["out_of_scope"] == 0
    for key in METRIC_KEYS - {"queries", "in_scope", "out_of_scope", "threshold", "latency_ms"}:
        assert result[key] == 0.0, key
    assert result["latency_ms"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_metrics_latency_does_not_depend_on_order() -> None:
    assert metrics(OUTCOMES, 0.5) == metrics(list(reversed(OUTCOMES)), 0.5)


# The sample knowledge base ---------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_sample_queries_on_the_sample_kb(sample_kb: KnowledgeBase) -> None:
    responder = Responder(Retriever(sample_kb), confidence_model(sample_kb))
    queries = load_queries(SAMPLE_QUERIES)
    lines = [line for line in SAMPLE_QUERIES.read_text().splitlines() if line.strip()]
    progressed: list[int] = []

    outcomes = run_queries(responder, queries, progressed.append)
    result = metrics(outcomes, responder.confidence.threshold)

    assert sum(progressed) == len(queries) == len(lines)
    assert set(result) == METRIC_KEYS
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    assert result["queries"] == len(queries)
    assert result["in_scope"] == sum(q.expected is not None for q in queries)
    assert result["out_of_scope"] == sum(q.expected is None for q in queries)
    assert result["recall_at_5"] >= 0.9
    assert result["recall_at_1"] <= result["recall_at_5"]
    assert result["recall_at_1"] <= result["mrr"] <= 1.0
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "answered_precision"):
        assert 0.0 <= result[key] <= 1.0
    latency = result["latency_ms"]
    assert 0.0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert result["threshold"] == round(responder.confidence.threshold, 4)
    for item in outcomes:
        assert (item.answered_id is not None) == (item.kind is ReplyKind.ANSWER)
        assert len(item.ranked_ids) == len(set(item.ranked_ids))
