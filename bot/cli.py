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

console = Console()
err_console = Console(stderr=True)

OBJECTIVE_HELP = (
    "recall: answer nearly all answerable questions, abstain on as many others as that allows; "
    "accuracy: most right answers plus right abstentions; balanced: mean of both recalls."
)
MAX_MISSED_HELP = "With --objective recall: in-scope accuracy that may be traded for abstentions."

ModelOption = Annotated[
    Path | None, typer.Option("--model", help="A sentence-transformers model directory.")
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
) -> None:
    """Serve the web chat, the chat API and the platform webhooks."""
    import os

    import uvicorn

    from bot.app import create_app
    from bot.service import build_services

    _setup_logging(verbose)
    if slack_socket_mode:
        # The Slack adapter reads its settings from the environment when it mounts.
        os.environ["SUPPORTBOT_SLACK_SOCKET_MODE"] = "1"
    settings = _settings(host=host, port=port)
    services = build_services(settings, progress=True)
    services.kb.embedder.warm_up()
    console.print(
        f"[bold green]Support bot ready[/] on http://{settings.host}:{settings.port}/ "
        f"({len(services.kb.entries)} entries, threshold "
        f"{services.engine.responder.confidence.threshold:.3f})"
    )
    uvicorn.run(create_app(services), host=settings.host, port=settings.port, log_level="info")


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
    discord_settings = load_discord_settings()  # fail fast, before the knowledge base loads
    services = build_services(_settings(), progress=True)
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
) -> None:
    """Measure answer quality and latency on labelled queries."""
    from bot.engine import Responder
    from bot.evaluate import calibrate, load_queries, metrics, run_queries
    from bot.service import confidence_model, ingest
    from knowledge.base import KnowledgeBase
    from knowledge.embeddings import Embedder
    from knowledge.ingest import load_sources
    from knowledge.retriever import Retriever

    items = load_queries(queries)
    calibration_items = load_queries(calibrate_file) if calibrate_file else None
    with tempfile.TemporaryDirectory(prefix="supportbot-eval-") as tmp:
        base = KnowledgeBase(Path(tmp) / "index", Embedder(model))
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
            task = bar.add_task("Evaluating", total=len(items))
            outcomes = run_queries(responder, items, lambda n: bar.advance(task, n))
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


def main() -> None:
    """Console-script entry point: errors print a clear message, not a traceback."""
    try:
        app()
    except SupportBotError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
