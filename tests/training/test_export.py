"""Export formats: OpenAI chat fine-tuning (validated) and sentence-transformers pairs."""

from __future__ import annotations

from typing import Any

import pytest

from training.errors import ExportFormatError
from training.export import (
    kb_example_pairs,
    openai_example,
    st_pairs,
    validate_openai,
)
from training.pairs import Pair


def _pair(**changes: Any) -> Pair:
    values: dict[str, Any] = {
        "id": "c#0",
        "conversation_id": "c",
        "platform": "web",
        "question": "How do I export a notebook as PDF?",
        "context": (),
        "answer": "Choose File > Export > PDF and press Export.",
        "answer_role": "agent",
    }
    values.update(changes)
    return Pair(**values)


def _good(n: int = 10) -> list[dict[str, Any]]:
    return [openai_example(_pair(id=f"c{i}#0")) for i in range(n)]


def test_openai_example_is_system_context_question_answer() -> None:
    pair = _pair(
        context=(
            {"role": "bot", "text": "Hi! How can I help?"},  # joined midway: dropped
            {"role": "customer", "text": "I need a PDF."},
            {"role": "agent", "text": "Of the whole notebook?"},
        ),
        question="yes",
    )
    example = openai_example(pair, "Be brief.")
    assert [m["role"] for m in example["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert example["messages"][0]["content"] == "Be brief."
    assert example["messages"][-1]["content"] == pair.answer
    assert validate_openai([example], min_examples=1) == 1


def test_consecutive_roles_are_merged() -> None:
    pair = _pair(context=({"role": "customer", "text": "hello"},), question="PDF please")
    messages = openai_example(pair)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "hello\nPDF please"


def test_the_validator_accepts_good_files() -> None:
    assert validate_openai(_good()) == 10


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ({"messages": []}, "no messages list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "does not end with an assistant"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user message"),
        (
            {
                "messages": [
                    {"role": "customer", "content": "hi"},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "role 'customer'",
        ),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]},
            "empty content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "system message at position 1",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            },
            "weight must be 0 or 1",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q" * 80_000},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "over the 16385 limit",
        ),
        ("not an object", "not a JSON object"),
    ],
)
def test_the_validator_names_each_broken_rule(broken: Any, problem: str) -> None:
    with pytest.raises(ExportFormatError) as info:
        validate_openai([*_good(), broken])
    assert any(problem in p and p.startswith("line 11") for p in info.value.problems), (
        info.value.problems
    )


def test_the_validator_wants_ten_examples() -> None:
    with pytest.raises(ExportFormatError, match="only 9 examples"):
        validate_openai(_good(9))


def test_st_rows_use_the_downvoted_answer_as_negative() -> None:
    rows = st_pairs([_pair(rejected="Notebooks can be renamed."), _pair(id="d#0")])
    assert rows[0] == {
        "anchor": "How do I export a notebook as PDF?",
        "positive": "Choose File > Export > PDF and press Export.",
        "negative": "Notebooks can be renamed.",
    }
    assert "negative" not in rows[1]  # no knowledge base: no near miss either


@pytest.mark.model
def test_near_miss_negatives_come_from_the_knowledge_base(sample_kb) -> None:  # type: ignore[no-untyped-def]
    entry = next(e for e in sample_kb.entries if e.examples)
    pair = _pair(question=entry.examples[0], answer=entry.answer, sources=(entry.id,))
    (row,) = st_pairs([pair], sample_kb)
    assert set(row) == {"anchor", "positive", "negative"}
    assert row["negative"] != entry.answer
    # The negative is a real passage of the knowledge base, ranked near the question.
    assert row["negative"] in {e.answer for e in sample_kb.entries}


@pytest.mark.model
def test_kb_example_questions_become_pairs(sample_kb) -> None:  # type: ignore[no-untyped-def]
    rows = kb_example_pairs(sample_kb)
    questions = sum(len([q for q in (e.question, *e.examples) if q]) for e in sample_kb.entries)
    assert len(rows) == questions
    answers = {e.answer for e in sample_kb.entries}
    assert all(r["positive"] in answers for r in rows)
    assert all(r.get("negative") != r["positive"] for r in rows)
    assert sum("negative" in r for r in rows) > 0.9 * len(rows)
