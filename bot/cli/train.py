"""Training-data and model commands: `train`, `data prepare`, `kb proposals ...`."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bot.cli.common import (
    ModelOption,
    app,
    cli_settings,
    console,
    data_app,
    err_console,
    progress_bar,
    proposals_app,
)


@app.command("train")
def train_model(
    out: Annotated[Path, typer.Option("--out", help="The versioned models folder to write.")],
    kb: Annotated[
        list[Path] | None,
        typer.Option("--kb", help="Knowledge base file(s) or folder(s) whose questions to learn."),
    ] = None,
    pairs: Annotated[
        list[Path] | None,
        typer.Option("--pairs", help='Exported pairs JSONL: {"anchor", "positive", "negative"?}.'),
    ] = None,
    cycles: Annotated[int, typer.Option(help="Train-evaluate-promote rounds.")] = 1,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs per cycle.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Rows per batch (in-batch negatives).")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 5e-5,
    holdout: Annotated[
        float, typer.Option(help="Share of the examples (or pairs) kept for the promotion check.")
    ] = 0.1,
    max_seq_length: Annotated[int, typer.Option(help="Tokens per text while training.")] = 64,
    seed: Annotated[
        int, typer.Option(help="Fixes splits, pairs, batches and initialisation.")
    ] = 42,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop each cycle after this many steps.")
    ] = None,
    hard_negatives: Annotated[
        bool,
        typer.Option(
            "--hard-negatives/--no-hard-negatives",
            help="Pair every example with a near miss from another entry (slower, sharper).",
        ),
    ] = False,
    entry_loss: Annotated[
        float,
        typer.Option(
            "--entry-loss",
            help="Weight of learning which entry each question belongs to, beside the "
            "ranking loss (0: the ranking loss alone).",
        ),
    ] = 1.0,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="Start from this model (default: the current version in --out, else the "
            "bundled all-MiniLM-L6-v2).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object at the end.")
    ] = False,
) -> None:
    """Fine-tune the retrieval model; promote a cycle's model only when it beats the current one."""
    from training.finetune import CycleResult, TrainConfig
    from training.finetune import train as run_training

    config = TrainConfig(
        cycles=cycles,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        holdout=holdout,
        max_seq_length=max_seq_length,
        seed=seed,
        max_steps=max_steps,
        hard_negatives=hard_negatives,
        entry_loss=entry_loss,
    )

    def show(result: CycleResult) -> None:
        if as_json:
            return
        verdict = (
            f"[green]promoted[/] as {out / str(result.version)}"
            if result.promoted
            else "[yellow]not promoted[/]: the current model stays"
        )
        table = Table(title=f"Cycle {result.cycle}: {verdict}")
        table.add_column("held-out set")
        table.add_column("metric")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        table.add_column("change", justify="right")
        for name in ("kb", "pairs", "overall"):
            before, after = getattr(result.before, name), getattr(result.after, name)
            if (
                before is None
                or after is None
                or (name == "overall" and result.before.pairs is None)
            ):
                continue
            for metric in ("recall_at_1", "recall_at_5", "mrr"):
                b, a = getattr(before, metric), getattr(after, metric)
                table.add_row(
                    f"{name} ({before.queries})", metric, f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}"
                )
        table.caption = (
            f"{result.train_rows} rows, {result.steps} steps, learning rate "
            f"{result.learning_rate:g}, {result.seconds:.0f}s"
        )
        console.print(table)

    import contextlib

    # With --json, stdout carries the one JSON object: the trainer's own prints go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = run_training(
            kb or [],
            pairs or [],
            out,
            config=config,
            base=base,
            on_cycle=show,
            on_status=err_console.print,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(report.out),
                    "current": report.current,
                    "model": str(report.model_path),
                    "seconds": round(report.seconds, 1),
                    "cycles": [c.to_json() for c in report.cycles],
                }
            )
        )
        return
    if report.promoted:
        console.print(
            f"[bold green]Model in service:[/] {report.model_path} "
            f"(use it with --model {out} or SUPPORTBOT_MODEL={out}; the bot re-indexes on start)"
        )
    else:
        console.print(
            f"[yellow]No cycle beat the current model[/]; {report.model_path} stays in service."
        )


def _bar_factory() -> Any:
    """A `training.prepare.ProgressFactory` drawing rich progress bars on stderr."""
    from contextlib import contextmanager

    @contextmanager
    def factory(description: str, total: int | None) -> Any:
        with progress_bar() as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    return factory


def _column_options(values: list[str] | None) -> dict[str, str]:
    columns: dict[str, str] = {}
    for value in values or ():
        field, sep, column = value.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise typer.BadParameter(f"--column wants FIELD=COLUMN, e.g. text=message: {value!r}")
        columns[field.strip()] = column.strip()
    return columns


@data_app.command("prepare")
def data_prepare(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Exports: folders, zips or files (for --format db: a database URL "
            "or SQLite file; '-' for the bot's own database)."
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="slack, discord, zendesk, csv, jsonl or db.")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the training files.")],
    kb: Annotated[
        list[Path] | None,
        typer.Option(
            "--kb",
            help="Knowledge-base files for near-miss negatives and example pairs (default: the "
            "configured index, if built).",
        ),
    ] = None,
    no_kb: Annotated[bool, typer.Option("--no-kb", help="Use no knowledge base.")] = False,
    model: ModelOption = None,
    agent: Annotated[
        list[str] | None, typer.Option(help="A user id or name to treat as an agent (repeat).")
    ] = None,
    bot_user: Annotated[
        list[str] | None,
        typer.Option("--bot", help="A user id or name to treat as the bot (repeat)."),
    ] = None,
    agent_role: Annotated[
        list[str] | None, typer.Option(help="Discord role whose members are agents (repeat).")
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(help="CSV/JSONL column for a field, FIELD=COLUMN (repeat)."),
    ] = None,
    platform: Annotated[str, typer.Option(help="Platform of CSV/JSONL rows without one.")] = "chat",
    region: Annotated[str, typer.Option(help="Phone region for numbers without +code.")] = "US",
    test_fraction: Annotated[
        float, typer.Option(help="Latest share of conversations for test.")
    ] = 0.2,
    cap_topic: Annotated[int | None, typer.Option(help="Most pairs per topic.")] = None,
    cap_platform: Annotated[int | None, typer.Option(help="Most pairs per platform.")] = None,
    min_topic: Annotated[int, typer.Option(help="Oversample train topics up to this.")] = 0,
    topics: Annotated[int | None, typer.Option(help="Number of topic clusters.")] = None,
    window: Annotated[int, typer.Option(help="Earlier messages kept as context.")] = 4,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Keep near-duplicates.")] = False,
    system_prompt: Annotated[
        str | None, typer.Option(help="System prompt of the OpenAI examples.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and clustering.")] = 0,
) -> None:
    """Turn support logs into clean, balanced, private training data."""
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from training.export import DEFAULT_SYSTEM_PROMPT
    from training.importers import FORMATS, ImportOptions
    from training.prepare import PrepareConfig, prepare

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    settings = cli_settings(model=model)
    resolved_sources = [settings.db_url if fmt == "db" and s == "-" else s for s in sources]
    config = PrepareConfig(
        options=ImportOptions(
            agents=frozenset(agent or ()),
            bots=frozenset(bot_user or ()),
            agent_roles=frozenset(agent_role or ()),
            columns=_column_options(column),
            platform=platform,
        ),
        region=region,
        dedup_threshold=None if no_dedup else 0.8,
        window=window,
        cap_topic=cap_topic,
        cap_platform=cap_platform,
        min_topic=min_topic,
        test_fraction=test_fraction,
        topics=topics,
        system_prompt=system_prompt or DEFAULT_SYSTEM_PROMPT,
        seed=seed,
    )
    embedder = Embedder(settings.model)
    with tempfile.TemporaryDirectory(prefix="supportbot-prepare-") as tmp:
        base: KnowledgeBase | None = None
        if kb and not no_kb:
            from bot.service import ingest_paths

            base = KnowledgeBase(Path(tmp) / "index", embedder)
            ingest_paths(base, kb, progress=True)
        elif not no_kb:
            candidate = KnowledgeBase(settings.index_dir, embedder)
            if candidate.exists:
                base = candidate.load()
        result = prepare(
            [(fmt, s) for s in resolved_sources],
            out,
            config=config,
            embedder=embedder,
            kb=base,
            progress=_bar_factory(),
        )
    redaction = result.clean.redaction.to_json()
    table = Table(title="Redacted")
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in dict(redaction["by_kind"]).items():  # type: ignore[call-overload]
        table.add_row(kind, str(count))
    table.add_row(
        "[bold]conversations changed",
        f"{redaction['conversations_changed']} of {redaction['conversations']}",
    )
    console.print(table)
    dropped = Table(title="Dropped")
    dropped.add_column("what")
    dropped.add_column("count", justify="right")
    for what, count in sorted(result.clean.dropped_turns.items()):
        dropped.add_row(f"turn: {what}", str(count))
    for what, count in sorted(result.clean.dropped_conversations.items()):
        dropped.add_row(f"conversation: {what}", str(count))
    console.print(dropped)
    for balance_table in result.balance.tables():
        console.print(balance_table)
    written = Table(title=f"Written to {out}")
    written.add_column("file")
    written.add_column("rows", justify="right")
    for name, rows in result.files.items():
        written.add_row(name, str(rows))
    console.print(written)
    for warning in result.report.get("warnings", ()):
        err_console.print(f"[yellow]warning:[/] {escape(str(warning))}")


def _reviewer(reviewer: str | None) -> str:
    import getpass

    if reviewer:
        return reviewer
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


@proposals_app.command("mine")
def proposals_mine(
    similarity: Annotated[
        float, typer.Option(help="Similarity to an entry above which an answer is known.")
    ] = 0.85,
    region: Annotated[str, typer.Option(help="Phone region for numbers without +code.")] = "US",
) -> None:
    """Propose entries from agents' answers in resolved handoffs (stored conversations)."""
    from bot.service import open_kb
    from bot.storage.store import Store
    from training.mining import mine_proposals

    settings = cli_settings()
    store = Store.from_url(settings.db_url)
    try:
        kb = open_kb(settings, progress=True)
        with progress_bar() as bar:
            task = bar.add_task("Mining handoffs", total=None)
            report = mine_proposals(
                store,
                kb,
                duplicate_similarity=similarity,
                region=region,
                on_progress=lambda n: bar.advance(task, n),
            )
    finally:
        store.close()
    console.print(
        f"[green]{report.proposed} proposed[/] from {report.candidates} agent answers "
        f"({report.known_to_kb} already in the knowledge base, {report.repeated} repeated, "
        f"{report.with_pii} still holding personal data)"
    )


@proposals_app.command("list")
def proposals_list(
    status: Annotated[
        str | None,
        typer.Option(help="proposed, approved or rejected (default: all)."),
    ] = "proposed",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List proposed knowledge-base entries."""
    from bot.storage.store import PROPOSAL_STATUSES, Store

    if status is not None and status not in PROPOSAL_STATUSES:
        raise typer.BadParameter(f"--status must be one of {', '.join(sorted(PROPOSAL_STATUSES))}")
    store = Store.from_url(cli_settings().db_url)
    try:
        items = store.proposals(status)
    finally:
        store.close()
    if as_json:
        for item in items:
            print(
                json.dumps(
                    {
                        "id": item.id,
                        "status": item.status,
                        "question": item.question,
                        "answer": item.answer,
                        "nearest_entry": item.nearest_entry,
                        "nearest_score": item.nearest_score,
                        "conversation_id": item.conversation_id,
                        "created_at": item.created_at.isoformat(),
                    }
                )
            )
        return
    table = Table(title=f"Knowledge-base proposals ({status or 'all'})")
    for name in ("id", "status", "question", "answer", "nearest"):
        table.add_column(name)
    for item in items:
        nearest = (
            f"{item.nearest_entry} ({item.nearest_score:.2f})"
            if item.nearest_entry and item.nearest_score is not None
            else ""
        )
        table.add_row(
            str(item.id), item.status, escape(item.question), escape(item.answer[:200]), nearest
        )
    console.print(table)


@proposals_app.command("approve")
def proposals_approve(
    proposal_id: Annotated[int, typer.Argument(help="The proposal's id (see `list`).")],
    reviewer: Annotated[str | None, typer.Option(help="Who approves (default: you).")] = None,
) -> None:
    """Approve a proposal: it is added to the knowledge base."""
    from bot.service import open_kb
    from bot.storage.store import Store
    from training.mining import approve_proposal

    settings = cli_settings()
    store = Store.from_url(settings.db_url)
    try:
        kb = open_kb(settings, progress=True)
        info, report = approve_proposal(store, kb, proposal_id, reviewer=_reviewer(reviewer))
    finally:
        store.close()
    console.print(
        f"[green]Approved[/] proposal {info.id} as entry {info.entry_id}; the knowledge base "
        f"now has {report.entries} entries."
    )


@proposals_app.command("reject")
def proposals_reject(
    proposal_id: Annotated[int, typer.Argument(help="The proposal's id (see `list`).")],
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    reviewer: Annotated[str | None, typer.Option(help="Who rejects (default: you).")] = None,
) -> None:
    """Reject a proposal."""
    from bot.storage.store import Store

    store = Store.from_url(cli_settings().db_url)
    try:
        info = store.review_proposal(
            proposal_id, "rejected", reviewer=_reviewer(reviewer), note=note
        )
    finally:
        store.close()
    console.print(f"[yellow]Rejected[/] proposal {info.id}.")


# Generative answers and Rasa (docs/generative.md, docs/rasa.md) --------------------------------
