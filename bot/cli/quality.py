"""Quality commands: `report`, `gaps`, `review list|mark`, `qa`, `prompts check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bot.cli.common import (
    app,
    cli_settings,
    console,
    err_console,
    progress_bar,
    prompts_app,
    review_app,
)

if TYPE_CHECKING:
    from bot.settings import Settings


def _when(value: str | None, option: str) -> Any:
    """An ISO date or datetime (UTC unless it says otherwise), or None."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        err_console.print(
            f"[red]{option} {escape(value)!r} is not a date: use e.g. 2026-01-31 or "
            "2026-01-31T12:00[/]"
        )
        raise typer.Exit(2) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("report")
def report(
    since: Annotated[
        str | None, typer.Option(help="Start (ISO date or datetime, UTC); default: 7 days ago.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End, exclusive (ISO date or datetime, UTC); default: now.")
    ] = None,
    bucket: Annotated[str, typer.Option(help="Series buckets: hour, day or week.")] = "day",
    deflection_hours: Annotated[
        float,
        typer.Option(help="A conversation no person joined within this many hours is deflected."),
    ] = 24.0,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write CSV here.")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    html_file: Annotated[Path | None, typer.Option("--html", help="Also write HTML here.")] = None,
) -> None:
    """Print the bot's health figures (answer rate, CSAT, deflection, latency...) for a period."""
    from datetime import timedelta

    from bot.model import utcnow
    from bot.storage.store import Store
    from monitoring.metrics import BUCKETS, compute
    from monitoring.report import tables, write_csv, write_html, write_json

    end = _when(until, "--until") or utcnow()
    start = _when(since, "--since") or end - timedelta(days=7)
    if bucket not in BUCKETS:
        err_console.print(f"[red]--bucket must be one of {', '.join(BUCKETS)}[/]")
        raise typer.Exit(2)
    if end <= start:
        err_console.print("[red]--until must be after --since[/]")
        raise typer.Exit(2)
    if deflection_hours < 0:
        err_console.print("[red]--deflection-hours cannot be negative[/]")
        raise typer.Exit(2)
    settings = cli_settings()
    store = Store.from_url(settings.db_url)
    try:
        metrics = compute(
            store,
            since=start,
            until=end,
            bucket=bucket,  # type: ignore[arg-type]
            deflection_window=timedelta(hours=deflection_hours),
        )
    finally:
        store.close()
    for table in tables(metrics):
        console.print(table)
    for path, write in ((csv_file, write_csv), (json_file, write_json), (html_file, write_html)):
        if path is None:
            continue
        try:
            write(metrics, path)
        except OSError as e:
            err_console.print(f"[red]cannot write {escape(str(path))}: {escape(str(e))}[/]")
            raise typer.Exit(1) from e
        console.print(f"Wrote {escape(str(path))}")


def _review_queue(settings: Settings) -> Any:
    from bot.storage.store import Store
    from monitoring.review import ReviewQueue

    store = Store.from_url(settings.db_url)
    return ReviewQueue(store.engine, sample_rate=settings.review_sample_rate)


@app.command("gaps")
def gaps(
    days: Annotated[float, typer.Option(help="Length of the period, ending now.")] = 7.0,
    distance: Annotated[
        float, typer.Option(help="Cosine distance under which questions share a cluster.")
    ] = 0.55,
    margin: Annotated[
        float, typer.Option(help="Answers below threshold + margin count as low confidence.")
    ] = 0.1,
    examples: Annotated[int, typer.Option(help="Example questions per cluster.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cluster unanswered, low-confidence and 👎 questions; classify failures."""
    from dataclasses import asdict
    from datetime import timedelta

    from bot.model import utcnow
    from bot.service import confidence_model
    from bot.storage.store import Store
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever
    from monitoring.gaps import classify_failures, failure_counts, find_gaps

    if days <= 0:
        raise typer.BadParameter("--days must be positive")
    settings = cli_settings()
    store = Store.from_url(settings.db_url)
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model)).load()
    threshold = confidence_model(kb, settings.threshold).threshold
    until = utcnow()
    since = until - timedelta(days=days)
    report = find_gaps(
        store.engine,
        kb.embedder,
        since=since,
        until=until,
        low_confidence=threshold + margin,
        distance=distance,
        examples=examples,
    )
    failures = classify_failures(store.engine, since=since, until=until, retriever=Retriever(kb))
    if as_json:
        data = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "total": report.total,
            "previous_total": report.previous_total,
            "clusters": [asdict(c) | {"trend": c.trend} for c in report.clusters],
            "failures": failure_counts(failures),
        }
        print(json.dumps(data, default=str))
        return
    table = Table(title=f"Knowledge gaps, last {days:g} days ({report.total} questions)")
    for column in ("cluster", "count", "trend", "reasons", "examples"):
        table.add_column(column, justify="right" if column in ("count", "trend") else "left")
    for cluster in report.clusters:
        table.add_row(
            escape(cluster.label),
            str(cluster.count),
            f"{cluster.trend:+d}",
            ", ".join(f"{k} {v}" for k, v in sorted(cluster.reasons.items())),
            escape("\n".join(cluster.examples)),
        )
    console.print(table)
    kinds = Table(title="Failures")
    kinds.add_column("kind")
    kinds.add_column("count", justify="right")
    for kind, count in failure_counts(failures).items():
        kinds.add_row(kind, str(count))
    console.print(kinds)


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="pending, reviewed or all.")] = "pending",
    limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only QA-flagged replies.")] = False,
) -> None:
    """Show the review queue (new replies are sampled into it first)."""
    queue = _review_queue(cli_settings())
    queue.sample()
    entries = queue.entries(status=status, limit=limit, only_flagged=flagged)
    table = Table(title=f"Review queue ({status})")
    for column in ("id", "kind", "question", "reply", "why", "verdict"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.id),
            entry.kind,
            escape(entry.question[:120]),
            escape(entry.reply_text[:160]),
            escape(entry.reasons),
            entry.verdict or "-",
        )
    console.print(table)


@review_app.command("mark")
def review_mark(
    item: Annotated[int, typer.Argument(help="The queue item's id (see `review list`).")],
    verdict: Annotated[str, typer.Argument(help="right or wrong.")],
    note: Annotated[str | None, typer.Option(help="Why, in a few words.")] = None,
    expected: Annotated[
        str | None, typer.Option(help="The knowledge-base entry that should have answered.")
    ] = None,
    reviewer: Annotated[str, typer.Option(help="Your name.")] = "cli",
) -> None:
    """Mark a queued reply right or wrong."""
    entry = _review_queue(cli_settings()).mark(
        item, verdict, reviewer=reviewer, note=note, expected_entry=expected
    )
    console.print(f"[green]Marked[/] item {entry.id} {entry.verdict}")


@app.command("qa")
def qa(
    guidelines: Annotated[
        Path | None, typer.Option(help="QA guidelines YAML (default: SUPPORTBOT_QA_GUIDELINES).")
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Only replies of the last N days (default: all).")
    ] = None,
) -> None:
    """Check every reply against the QA guidelines; breaches go to the review queue."""
    from datetime import timedelta

    from bot.model import utcnow
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from monitoring.qa import load_guidelines, run_qa

    settings = cli_settings()
    rules = load_guidelines(guidelines or settings.qa_guidelines)
    queue = _review_queue(settings)
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model))
    urls = [e.url for e in kb.load().entries if e.url] if kb.exists else []
    since = utcnow() - timedelta(days=days) if days else None
    with progress_bar() as bar:
        task = bar.add_task("Checking replies", total=None)
        report = run_qa(
            queue.engine,
            rules,
            urls,
            queue,
            since=since,
            on_progress=lambda n, total: bar.update(task, completed=n, total=total),
        )
    table = Table(title=f"QA: {report.checked} replies checked, {report.flagged} flagged")
    table.add_column("rule")
    table.add_column("breaches", justify="right")
    for rule, count in sorted(report.by_rule.items(), key=lambda kv: -kv[1]):
        table.add_row(rule, str(count))
    console.print(table)


# Training data (training/) ---------------------------------------------------------------------


@prompts_app.command("check")
def prompts_check(
    suite: Annotated[Path, typer.Argument(help="A suite YAML file (bot/prompts/suites/).")],
    version: Annotated[
        str | None, typer.Option("--version", help="Prompt version (default: configured).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--llm-model", help="Model (default: SUPPORTBOT_LLM_MODEL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a prompt suite against the configured model and print a pass/fail table."""
    from dataclasses import asdict

    from bot.compose.suite import load_suite, run_suite
    from bot.errors import ConfigError

    cases = load_suite(suite)
    settings = cli_settings(prompt_version=version, llm_model=model)
    if not settings.llm_model:
        raise ConfigError(
            "no model configured: set SUPPORTBOT_LLM_MODEL (and SUPPORTBOT_LLM_BASE_URL for a "
            "local OpenAI-compatible server) or pass --llm-model; see docs/generative.md"
        )
    with progress_bar() as bar:
        task = bar.add_task("Asking", total=len(cases.cases))
        results = run_suite(settings, cases, on_case=lambda _: bar.advance(task))
    failed = sum(not r.passed for r in results)
    if as_json:
        print(json.dumps([asdict(r) for r in results], default=str))
    else:
        table = Table(
            title=f"{suite} · model {settings.llm_model} · prompt {settings.prompt_version}"
        )
        for column in ("#", "case", "outcome", "missing facts", "claims made", "result"):
            table.add_column(column)
        for number, result in enumerate(results, start=1):
            outcome = result.outcome + (f" ({result.reason})" if result.reason else "")
            table.add_row(
                str(number),
                escape(result.case.name or result.case.question[:60]),
                escape(outcome),
                escape(", ".join(result.missing)),
                escape(", ".join(result.made)),
                "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]",
            )
        console.print(table)
        console.print(f"{len(results) - failed}/{len(results)} passed")
    if failed:
        raise typer.Exit(1)
