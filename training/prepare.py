"""`supportbot data prepare`: every step from exports to training files, in one call.

Writes into `out`:

- `conversations.jsonl`: the cleaned, redacted, de-duplicated conversations;
- `pairs.train.jsonl`, `pairs.test.jsonl`: question → answer pairs with context and labels;
- `openai.jsonl` (and `openai.test.jsonl`): OpenAI chat fine-tuning examples, validated;
- `st-pairs.jsonl` (and `st-pairs.test.jsonl`): sentence-transformers rows
  `{"anchor", "positive", "negative"?}`, the knowledge base's examples included in train;
- `report.json`: what was imported, dropped, redacted, balanced and written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.balance import BalanceReport, assign_topics, balance
from training.clean import CleanReport, clean
from training.errors import ExportFormatError, TrainingDataError
from training.export import (
    DEFAULT_SYSTEM_PROMPT,
    MIN_EXAMPLES,
    kb_example_pairs,
    openai_example,
    st_pairs,
    validate_openai,
    write_jsonl,
)
from training.importers import ImportOptions, ImportResult, load_source

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder

__all__ = ["PrepareConfig", "PrepareResult", "prepare"]

logger = logging.getLogger(__name__)

#: (description, total) → a context whose value advances by n: how the CLI shows progress bars.
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


@dataclass(frozen=True, slots=True)
class PrepareConfig:
    """Settings of one `prepare` run (see `balance` and `clean` for their meaning)."""

    options: ImportOptions = field(default_factory=ImportOptions)
    region: str = "US"
    dedup_threshold: float | None = 0.8
    window: int = 4
    cap_topic: int | None = None
    cap_platform: int | None = None
    min_topic: int = 0
    test_fraction: float = 0.2
    topics: int | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 0


@dataclass
class PrepareResult:
    """What a run wrote and its reports."""

    files: dict[str, int]
    clean: CleanReport
    balance: BalanceReport
    report: dict[str, Any]


def _no_progress(_: str, __: int | None) -> AbstractContextManager[Callable[[int], None]]:
    return nullcontext(lambda _n: None)


def prepare(
    sources: Sequence[tuple[str, str]],
    out: Path,
    *,
    config: PrepareConfig | None = None,
    embedder: Embedder | None = None,
    kb: KnowledgeBase | None = None,
    progress: ProgressFactory | None = None,
) -> PrepareResult:
    """Import, clean, pair, balance and export; see the module docstring.

    Args:
        sources: (format, source) for each export.
        out: the output folder (created).
        config: the run's settings.
        embedder: for topic clustering; None puts every pair in one topic (or uses intents).
        kb: a loaded knowledge base, for near-miss negatives and its example questions.
        progress: progress bars (see `ProgressFactory`); None shows none.

    Raises:
        TrainingDataError: an export is unreadable, or nothing usable came out of the sources.
    """
    from training.pairs import build_pairs

    config = config or PrepareConfig()
    bar = progress or _no_progress
    imported = ImportResult(())
    per_source: dict[str, int] = {}
    with bar("Importing", len(sources)) as advance:
        for fmt, source in sources:
            result = load_source(fmt, source, config.options)
            per_source[f"{fmt}:{source}"] = len(result.conversations)
            imported = imported.merge(result)
            advance(1)
    if not imported.conversations:
        raise TrainingDataError(
            "no conversations in the sources: check --format matches the exports"
        )
    with bar("Cleaning", len(imported.conversations)) as advance:
        conversations, clean_report = clean(
            imported,
            region=config.region,
            dedup_threshold=config.dedup_threshold,
            on_progress=advance,
        )
    pairs = build_pairs(conversations, window=config.window)
    if not pairs:
        raise TrainingDataError(
            "no question → answer pairs: the conversations have no customer question followed "
            "by an answer (check the roles: --agent, --bot, or the role column)"
        )
    with bar("Topics", None) as advance:
        pairs, method = assign_topics(pairs, embedder, k=config.topics, seed=config.seed)
        advance(1)
    split, balance_report = balance(
        pairs,
        cap_topic=config.cap_topic,
        cap_platform=config.cap_platform,
        min_topic=config.min_topic,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    balance_report.topic_method = method
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    files["conversations.jsonl"] = write_jsonl(
        out / "conversations.jsonl", (c.to_json() for c in conversations)
    )
    files["pairs.train.jsonl"] = write_jsonl(
        out / "pairs.train.jsonl", (p.to_json() for p in split.train)
    )
    files["pairs.test.jsonl"] = write_jsonl(
        out / "pairs.test.jsonl", (p.to_json() for p in split.test)
    )
    warnings: list[str] = []
    for name, chosen in (("openai.jsonl", split.train), ("openai.test.jsonl", split.test)):
        examples = [openai_example(p, config.system_prompt) for p in chosen]
        try:
            validate_openai(examples, min_examples=MIN_EXAMPLES if name == "openai.jsonl" else 0)
        except ExportFormatError as exc:
            if any(not problem.startswith("only ") for problem in exc.problems):
                raise ExportFormatError(list(exc.problems), out / name) from exc
            warnings.append(f"{name}: {exc.problems[-1]}")
        files[name] = write_jsonl(out / name, examples)
    with bar("Hard negatives", len(split.train) + len(split.test)) as advance:
        train_rows = st_pairs(split.train, kb, on_progress=advance)
        test_rows = st_pairs(split.test, kb, on_progress=advance)
    if kb is not None:
        with bar("Knowledge-base examples", len(kb.entries)) as advance:
            train_rows += kb_example_pairs(kb, on_progress=advance)
    files["st-pairs.jsonl"] = write_jsonl(out / "st-pairs.jsonl", train_rows)
    files["st-pairs.test.jsonl"] = write_jsonl(out / "st-pairs.test.jsonl", test_rows)
    files["report.json"] = 1
    report: dict[str, Any] = {
        "sources": per_source,
        "imported_conversations": len(imported.conversations),
        "cleaning": clean_report.to_json(),
        "pairs": len(pairs),
        "pairs_labels": {
            "resolved": sum(1 for p in pairs if p.resolved),
            "thumbs_up": sum(1 for p in pairs if p.feedback == "up"),
            "after_handoff": sum(1 for p in pairs if p.after_handoff),
            "with_rejected_answer": sum(1 for p in pairs if p.rejected),
        },
        "balance": balance_report.to_json(),
        "st_pairs_with_negative": sum(1 for r in train_rows + test_rows if "negative" in r),
        "files": files,
        "warnings": warnings,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    logger.info("prepared training data in %s: %s", out, files)
    return PrepareResult(files, clean_report, balance_report, report)
