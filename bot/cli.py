"""The `supportbot` command line.

Heavy modules (torch, sentence-transformers, FAISS) are imported inside the commands that need
them, so `supportbot --help` answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.errors import SupportBotError

if TYPE_CHECKING:
    from bot.settings import Settings

app = typer.Typer(
    name="supportbot",
    help="A customer-support bot that answers from your knowledge base.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Build and inspect the knowledge base.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare data sets.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(data_app, name="data")
review_app = typer.Typer(
    help="The review queue: sampled and QA-flagged replies.", no_args_is_help=True
)
app.add_typer(review_app, name="review")

console = Console()
err_console = Console(stderr=True)

OBJECTIVE_HELP = (
    "recall: answer nearly all answerable questions, abstain on as many others as that allows; "
    "accuracy: most right answers plus right abstentions; balanced: mean of both recalls."
)
MAX_MISSED_HELP = "With --objective recall: in-scope accuracy that may be traded for abstentions."

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="A sentence-transformers model directory, or a `supportbot train --out` folder.",
    ),
]


def _settings(**overrides: Any) -> Settings:
    from bot.settings import load_settings

    return load_settings(**overrides)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(envvar="PORT", help="Port to listen on.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    slack_socket_mode: Annotated[
        bool,
        typer.Option(
            "--slack-socket-mode",
            help="Receive Slack events over Socket Mode (needs SLACK_APP_TOKEN); "
            "same as SUPPORTBOT_SLACK_SOCKET_MODE=1.",
        ),
    ] = False,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="text, or json: one JSON object a line, with the conversation id of the turn.",
        ),
    ] = "text",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes; more than 1 needs PostgreSQL (DATABASE_URL). Each loads "
            "the model and the index itself.",
        ),
    ] = 1,
) -> None:
    """Serve the web chat, the chat API and the platform webhooks."""
    import os

    import uvicorn

    from bot.app import create_app
    from bot.service import build_services

    if log_format not in ("text", "json"):
        err_console.print(f"[red]--log-format is text or json, not {escape(log_format)!r}[/]")
        raise typer.Exit(2)
    from monitoring.telemetry import configure_logging

    configure_logging(
        "json" if log_format == "json" else "text",
        level=logging.DEBUG if verbose else logging.INFO,
    )
    if slack_socket_mode:
        # The Slack adapter reads its settings from the environment when it mounts.
        os.environ["SUPPORTBOT_SLACK_SOCKET_MODE"] = "1"
    if workers > 1:
        _run_workers(workers, host=host, port=port, verbose=verbose, log_format=log_format)
        return
    settings = _settings(host=host, port=port)
    services = build_services(settings, progress=True)
    services.kb.embedder.warm_up()
    console.print(
        f"[bold green]Support bot ready[/] on http://{settings.host}:{settings.port}/ "
        f"({len(services.kb.entries)} entries, threshold "
        f"{services.engine.responder.confidence.threshold:.3f})"
    )
    if settings.dashboard_token:
        console.print(f"Dashboard on http://{settings.host}:{settings.port}/dashboard")
    else:
        console.print("Dashboard disabled: set SUPPORTBOT_DASHBOARD_TOKEN to turn it on")
    uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="info")


def _prepare_shared_state(host: str | None, port: int | None) -> int:
    """Migrate the database and make sure the knowledge base is built (from the bundled sample
    on first start, re-embedded after a model change); returns its number of entries."""
    from bot.service import open_kb
    from bot.storage import db

    settings = _settings(host=host, port=port)
    db.migrate(settings.db_url)
    return len(open_kb(settings, progress=True).entries)


def _run_workers(
    workers: int, *, host: str | None, port: int | None, verbose: bool, log_format: str
) -> None:
    """`supportbot run --workers N`: uvicorn's N processes, each building its own services."""
    import os

    import uvicorn

    from bot.app import LOG_FORMAT_ENV, LOG_LEVEL_ENV
    from bot.storage import db

    settings = _settings(host=host, port=port)
    if db.normalize_url(settings.db_url).get_backend_name() != "postgresql":
        err_console.print(
            f"[red]--workers {workers} needs PostgreSQL: several processes cannot share the "
            "SQLite file safely (one writer at a time, no locks between processes).[/] Set "
            "DATABASE_URL=postgresql+psycopg://USER@HOST:5432/DBNAME, or run one worker."
        )
        raise typer.Exit(2)
    # Once, before the workers start, so they never race to do it; in a process of its own,
    # so this supervising process does not keep a copy of the model for nothing.
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        entries = pool.submit(_prepare_shared_state, host, port).result()
    os.environ[LOG_FORMAT_ENV] = log_format
    os.environ[LOG_LEVEL_ENV] = "DEBUG" if verbose else "INFO"
    # /metrics sums every worker's counters (monitoring.telemetry): a fresh folder per run, as
    # files left by an earlier run would be counted again.
    import tempfile

    from monitoring.telemetry import MULTIPROC_DIR_ENV

    metrics_dir = tempfile.TemporaryDirectory(prefix="supportbot-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir.name
    console.print(
        f"[bold green]Support bot starting {workers} workers[/] on "
        f"http://{settings.host}:{settings.port}/ ({entries} entries, database "
        f"{escape(db.describe_url(settings.db_url))}); each loads the model and the index"
    )
    with metrics_dir:
        uvicorn.run(
            "bot.app:create_app_from_env",
            factory=True,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level="info",
        )


@app.command()
def chat(
    user: Annotated[str, typer.Option(help="Your user name in the conversation.")] = "you",
) -> None:
    """Chat with the bot in the terminal."""
    from adapters.console.chat import run_console
    from bot.service import build_services

    services = build_services(_settings(), progress=True)
    run_console(services.engine, user=user, console=console)


@app.command("discord")
def discord_bot(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the bot in Discord servers and DMs (needs DISCORD_TOKEN; see docs/discord.md)."""
    from adapters.discord import load_discord_settings
    from adapters.discord import run as run_discord
    from bot.service import build_services

    _setup_logging(verbose)
    settings = _settings()  # first: it reads <NAME>_FILE secrets (DISCORD_TOKEN_FILE) too
    discord_settings = load_discord_settings()  # fail fast, before the knowledge base loads
    services = build_services(settings, progress=True)
    services.kb.embedder.warm_up()
    run_discord(discord_settings, services.engine)


@kb_app.command("ingest")
def kb_ingest(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="FAQ .jsonl/.csv files or article folders.")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Drop every entry not in these paths.")
    ] = False,
    model: ModelOption = None,
    zendesk_help_center: Annotated[
        bool,
        typer.Option(
            "--zendesk-help-center",
            help="Also import the Zendesk Help Center's articles (ZENDESK_SUBDOMAIN; see "
            "docs/zendesk.md).",
        ),
    ] = False,
    zendesk_export: Annotated[
        Path | None,
        typer.Option(help="Read Help Center articles from this exported JSON file instead."),
    ] = None,
) -> None:
    """Add or update knowledge from files; only changed items are re-embedded."""
    from bot.service import ingest
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.ingest import load_sources

    if not paths and not zendesk_help_center and zendesk_export is None:
        raise typer.BadParameter("give files or folders to ingest, or --zendesk-help-center")
    settings = _settings(model=model)
    entries = load_sources(paths) if paths else []
    if zendesk_help_center or zendesk_export is not None:
        # Imported here: only those who use Zendesk need these.
        from adapters.zendesk.help_center import read_articles
        from knowledge.zendesk_help_center import articles_to_entries

        with _progress() as bar:
            task = bar.add_task("Help Center pages", total=None)
            articles = read_articles(
                zendesk_export,
                on_page=lambda n, _, total: bar.update(task, completed=n, total=total),
            )
        entries += articles_to_entries(articles)
        console.print(f"Zendesk Help Center: {len(articles)} articles")
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model))
    report = ingest(kb, entries, replace_all=replace, progress=True)
    console.print(
        f"[green]Ingested[/] {report.entries} entries ({report.units} units) in "
        f"{report.seconds:.1f}s: {report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged; "
        f"{report.embedded} texts embedded, {report.reused} reused."
    )


@kb_app.command("stats")
def kb_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show what the knowledge base holds and the threshold in force."""
    from bot.service import confidence_model
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder

    settings = _settings()
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model)).load()
    stats = kb.stats()
    model = confidence_model(kb, settings.threshold)
    stats["threshold"] = model.threshold
    stats["threshold_origin"] = model.origin
    if as_json:
        print(json.dumps(stats, indent=2, default=str))
        return
    table = Table(title="Knowledge base", show_header=False)
    for key, value in stats.items():
        table.add_row(key, str(value))
    console.print(table)


@kb_app.command("calibrate")
def kb_calibrate(
    queries: Annotated[Path, typer.Option(help="Labelled queries (JSONL).")],
    objective: Annotated[str, typer.Option(help=OBJECTIVE_HELP)] = "recall",
    max_missed: Annotated[float, typer.Option(help=MAX_MISSED_HELP)] = 0.025,
) -> None:
    """Fit the answering threshold on labelled queries and store it with the knowledge base."""
    from bot.engine import Responder
    from bot.evaluate import calibrate, load_queries
    from bot.service import confidence_model
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever

    settings = _settings()
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model)).load()
    items = load_queries(queries)
    responder = Responder(Retriever(kb), confidence_model(kb))
    with _progress() as bar:
        task = bar.add_task("Calibrating", total=len(items))
        model = calibrate(responder, items, objective, max_missed, lambda n: bar.advance(task, n))
    data = model.to_json()
    data["queries_file"] = str(queries)
    kb.save_calibration(data)
    console.print(
        f"[green]Calibrated[/] on {model.samples} queries: threshold {model.threshold:.3f}"
    )


@app.command("eval")
def evaluate(
    kb: Annotated[list[Path], typer.Option("--kb", help="Knowledge base file(s) or folder(s).")],
    queries: Annotated[Path, typer.Option(help="Labelled queries to evaluate (JSONL).")],
    calibrate_file: Annotated[
        Path | None, typer.Option("--calibrate", help="Tune the threshold on these queries first.")
    ] = None,
    model: ModelOption = None,
    objective: Annotated[str, typer.Option(help=OBJECTIVE_HELP)] = "recall",
    max_missed: Annotated[float, typer.Option(help=MAX_MISSED_HELP)] = 0.025,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    replay_feedback: Annotated[
        bool,
        typer.Option(
            "--feedback-replay",
            help="Split the queries in halves A and B; rate A's answers (👍 right top-1; 👎 wrong "
            "top-1 and the right entry endorsed) and measure B before and after that feedback.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Shuffle seed of the --feedback-replay split.")] = 0,
) -> None:
    """Measure answer quality and latency on labelled queries."""
    from bot.engine import Responder
    from bot.evaluate import calibrate, feedback_replay, load_queries, metrics, run_queries
    from bot.service import confidence_model, ingest, make_embedder
    from knowledge.base import KnowledgeBase
    from knowledge.ingest import load_sources
    from knowledge.retriever import Retriever

    items = load_queries(queries)
    calibration_items = load_queries(calibrate_file) if calibrate_file else None
    with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
        # SUPPORTBOT_EMBED_BACKEND / _QUANTIZE apply, so their effect on quality is measurable.
        base = KnowledgeBase(Path(tmp) / "index", make_embedder(_settings(), model))
        ingest(base, load_sources(kb), progress=not as_json)
        responder = Responder(Retriever(base), confidence_model(base))
        with _progress() as bar:
            if calibration_items:
                task = bar.add_task("Calibrating", total=len(calibration_items))
                responder.confidence = calibrate(
                    responder,
                    calibration_items,
                    objective,
                    max_missed,
                    lambda n: bar.advance(task, n),
                )
            if replay_feedback:
                # Half B twice (before, after) and half A once.
                total = 2 * (len(items) - len(items) // 2) + len(items) // 2
                task = bar.add_task("Replaying feedback", total=total)
                replay = feedback_replay(
                    responder, items, seed=seed, progress=lambda n: bar.advance(task, n)
                )
            else:
                task = bar.add_task("Evaluating", total=len(items))
                outcomes = run_queries(responder, items, lambda n: bar.advance(task, n))
        if replay_feedback:
            _print_replay(replay.as_dict(), queries, as_json)
            return
        result = metrics(outcomes, responder.confidence.threshold)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"Evaluation of {queries}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console.print(table)


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
    settings = _settings()
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


def _print_replay(result: dict[str, Any], queries: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    table = Table(
        title=f"Feedback replay on {queries}: {result['rated']} of half A's "
        f"{result['half_a']} queries rated (+{result['endorsed']} / -{result['rejected']}), "
        f"half B ({result['half_b']}) measured"
    )
    table.add_column("metric (half B)")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    before, after, delta = result["before"], result["after"], result["delta"]
    for key, value in before.items():
        if key in delta:
            table.add_row(key, f"{value:.4f}", f"{after[key]:.4f}", f"{delta[key]:+.4f}")
        elif isinstance(value, dict):
            table.add_row(
                key,
                ", ".join(f"{k} {v}" for k, v in value.items()),
                ", ".join(f"{k} {v}" for k, v in after[key].items()),
                "",
            )
    console.print(table)


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


@data_app.command("import-intents")
def import_intents(
    source: Annotated[Path, typer.Argument(help="A folder like BANKING77 (train.csv, oos/...).")],
    out: Annotated[Path, typer.Option(help="Where to write KB and query files.")] = Path(
        ".supportbot/data"
    ),
) -> None:
    """Convert a labelled intent data set into knowledge-base and query files."""
    from knowledge.datasets import import_intents as convert

    written = convert(source, out)
    table = Table(title="Written")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for path, n in written.values():
        table.add_row(str(path), str(n))
    console.print(table)


# Knowledge gaps, review queue, QA (monitoring/gaps.py, review.py, qa.py) ----------------------


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
    settings = _settings()
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
    queue = _review_queue(_settings())
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
    entry = _review_queue(_settings()).mark(
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

    settings = _settings()
    rules = load_guidelines(guidelines or settings.qa_guidelines)
    queue = _review_queue(settings)
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model))
    urls = [e.url for e in kb.load().entries if e.url] if kb.exists else []
    since = utcnow() - timedelta(days=days) if days else None
    with _progress() as bar:
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

proposals_app = typer.Typer(
    help="Knowledge-base entries proposed from agents' answers in resolved handoffs.",
    no_args_is_help=True,
)
kb_app.add_typer(proposals_app, name="proposals")


def _bar_factory() -> Any:
    """A `training.prepare.ProgressFactory` drawing rich progress bars on stderr."""
    from contextlib import contextmanager

    @contextmanager
    def factory(description: str, total: int | None) -> Any:
        with _progress() as bar:
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
    settings = _settings(model=model)
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

    settings = _settings()
    store = Store.from_url(settings.db_url)
    try:
        kb = open_kb(settings, progress=True)
        with _progress() as bar:
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
    store = Store.from_url(_settings().db_url)
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

    settings = _settings()
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

    store = Store.from_url(_settings().db_url)
    try:
        info = store.review_proposal(
            proposal_id, "rejected", reviewer=_reviewer(reviewer), note=note
        )
    finally:
        store.close()
    console.print(f"[yellow]Rejected[/] proposal {info.id}.")


# Generative answers and Rasa (docs/generative.md, docs/rasa.md) --------------------------------

prompts_app = typer.Typer(help="Check the generative answers' prompts.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


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
    settings = _settings(prompt_version=version, llm_model=model)
    if not settings.llm_model:
        raise ConfigError(
            "no model configured: set SUPPORTBOT_LLM_MODEL (and SUPPORTBOT_LLM_BASE_URL for a "
            "local OpenAI-compatible server) or pass --llm-model; see docs/generative.md"
        )
    with _progress() as bar:
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


@app.command("rasa-actions")
def rasa_actions(
    port: Annotated[int, typer.Option(help="Port of the action server.")] = 5055,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the bot's knowledge, handoff and feedback as Rasa custom actions (docs/rasa.md)."""
    from adapters.rasa import serve
    from bot.service import build_services

    _setup_logging(verbose)
    services = build_services(_settings(), progress=True)
    services.kb.embedder.warm_up()
    console.print(
        f"[bold green]Rasa action server[/] on http://{host}:{port}/webhook "
        f"({len(services.kb.entries)} entries)"
    )
    token = services.settings.rasa_token
    serve(
        services.engine,
        host=host,
        port=port,
        token=token.get_secret_value() if token is not None else None,
    )


def main() -> None:
    """Console-script entry point: errors print a clear message, not a traceback."""
    try:
        app()
    except SupportBotError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
