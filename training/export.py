"""Training files: OpenAI chat fine-tuning JSONL and sentence-transformers pairs.

**OpenAI chat format**, one example a line::

    {"messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...},
                  {"role": "assistant", "content": ...}]}

`validate_openai` checks the format's rules: each line a JSON object with a `messages` list;
roles only system/user/assistant (system first, if at all); every `content` a non-empty string;
at least one user message; the last message the assistant's; an optional `weight` of 0 or 1 on
assistant messages; a token estimate (≈ 4 characters a token, plus 4 a message) under the
limit; and at least 10 examples in the file.

**Sentence-transformers pairs** (what `supportbot train --pairs` reads), one a line::

    {"anchor": "<question>", "positive": "<answer>", "negative": "<wrong answer>"}

`negative` is there only when one is known: an answer rated 👎 for the same question, or a
near miss (a top-ranked knowledge-base passage that is not the right answer). The knowledge
base's own example questions are pairs too (example → the entry's answer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from training.errors import ExportFormatError
from training.pairs import Pair

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "MAX_EXAMPLE_TOKENS",
    "MIN_EXAMPLES",
    "estimate_tokens",
    "kb_example_pairs",
    "openai_example",
    "st_pairs",
    "validate_openai",
    "write_jsonl",
]

DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a helpful customer-support assistant. Answer the customer's question accurately "
    "and briefly, from the company's documentation; offer a person when you cannot help."
)
MAX_EXAMPLE_TOKENS: Final = 16_385
"""The per-example token limit of the smallest chat fine-tuning context OpenAI documents."""
MIN_EXAMPLES: Final = 10
"""OpenAI refuses a fine-tuning file with fewer examples."""
ROLES: Final = frozenset({"system", "user", "assistant"})
_OPENAI_ROLE = {"customer": "user", "agent": "assistant", "bot": "assistant"}


def estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A rough token count of a chat example: ≈ 4 characters a token, 4 tokens per message."""
    return sum(4 + len(str(m.get("content", ""))) // 4 + 1 for m in messages) + 3


def openai_example(pair: Pair, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> dict[str, Any]:
    """One chat example: system prompt, the context, the question, the answer.

    Consecutive messages of one role are merged, so the turns alternate.
    """
    messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
    turns = [(_OPENAI_ROLE[c["role"]], c["text"]) for c in pair.context]
    turns += [("user", pair.question), ("assistant", pair.answer)]
    # A context opening with the assistant reads as a conversation joined midway: skip that part.
    while turns and turns[0][0] == "assistant":
        turns.pop(0)
    for role, text in turns:
        text = text.strip()
        if not text:
            continue
        if messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + text
        else:
            messages.append({"role": role, "content": text})
    return {"messages": messages}


def validate_openai(
    examples: Iterable[Mapping[str, Any]],
    *,
    max_tokens: int = MAX_EXAMPLE_TOKENS,
    min_examples: int = MIN_EXAMPLES,
    path: Path | None = None,
) -> int:
    """Check chat fine-tuning examples against the format's rules; see the module docstring.

    Returns:
        How many examples were checked.

    Raises:
        ExportFormatError: listing every problem with the example's 1-based line number.
    """
    problems: list[str] = []
    count = 0
    for count, example in enumerate(examples, 1):
        where = f"line {count}"
        if not isinstance(example, Mapping):
            problems.append(f"{where}: not a JSON object")
            continue
        messages = example.get("messages")
        if not isinstance(messages, list) or not messages:
            problems.append(f"{where}: no messages list")
            continue
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                problems.append(f"{where}: message {index} is not an object")
                continue
            role = message.get("role")
            if role not in ROLES:
                problems.append(f"{where}: message {index} has role {role!r}")
            elif role == "system" and index != 0:
                problems.append(f"{where}: system message at position {index}, not first")
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                problems.append(f"{where}: message {index} has empty content")
            extra = set(message) - {"role", "content", "name", "weight"}
            if extra:
                problems.append(f"{where}: message {index} has unknown keys {sorted(extra)}")
            if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
                problems.append(f"{where}: message {index}: weight must be 0 or 1, on assistant")
        roles = [m.get("role") for m in messages if isinstance(m, Mapping)]
        if "user" not in roles:
            problems.append(f"{where}: no user message")
        if not roles or roles[-1] != "assistant":
            problems.append(f"{where}: does not end with an assistant message")
        tokens = estimate_tokens([m for m in messages if isinstance(m, Mapping)])
        if tokens > max_tokens:
            problems.append(f"{where}: about {tokens} tokens, over the {max_tokens} limit")
    if count < min_examples:
        problems.append(f"only {count} examples; fine-tuning needs at least {min_examples}")
    if problems:
        raise ExportFormatError(problems, path)
    return count


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSONL (UTF-8, one object a line); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def st_pairs(
    pairs: Sequence[Pair],
    kb: KnowledgeBase | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> list[dict[str, str]]:
    """Sentence-transformers rows from pairs, with hard negatives where known.

    The negative is the pair's 👎-rated answer when it has one; otherwise, with a knowledge base,
    the best-ranked entry for the question that is neither the answer nor one of the answer's
    sources (a near miss).
    """
    retriever = None
    if kb is not None:
        from knowledge.retriever import Retriever

        retriever = Retriever(kb)
    rows: list[dict[str, str]] = []
    for pair in pairs:
        row = {"anchor": pair.question, "positive": pair.answer}
        if pair.rejected and _norm(pair.rejected) != _norm(pair.answer):
            row["negative"] = pair.rejected
        elif retriever is not None:
            found = retriever.retrieve(pair.question, top=5)
            for candidate in found.candidates:
                entry = candidate.entry
                if entry.id in pair.sources or _norm(entry.answer) == _norm(pair.answer):
                    continue
                row["negative"] = entry.answer
                break
        rows.append(row)
        if on_progress is not None:
            on_progress(1)
    return rows


def kb_example_pairs(
    kb: KnowledgeBase, *, on_progress: Callable[[int], None] | None = None
) -> list[dict[str, str]]:
    """The knowledge base's questions and example questions → their entry's answer.

    Each gets, as negative, the best-ranked other entry for that question (a near miss).
    """
    from knowledge.retriever import Retriever

    retriever = Retriever(kb)
    rows: list[dict[str, str]] = []
    for entry in kb.entries:
        questions = [q for q in (entry.question, *entry.examples) if q]
        for question in questions:
            row = {"anchor": question, "positive": entry.answer}
            found = retriever.retrieve(question, top=5)
            for candidate in found.candidates:
                if candidate.entry.id != entry.id and _norm(candidate.entry.answer) != _norm(
                    entry.answer
                ):
                    row["negative"] = candidate.entry.answer
                    break
            rows.append(row)
        if on_progress is not None:
            on_progress(1)
    return rows
