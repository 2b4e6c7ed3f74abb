"""Serving commands: `run` (one process or `--workers N`), `chat`, `discord`, `rasa-actions`."""

from __future__ import annotations

import logging
import tempfile
from typing import Annotated

import typer
from rich.markup import escape

from bot.cli.common import app, cli_settings, console, err_console, setup_logging


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
    settings = cli_settings(host=host, port=port)
    services = build_services(settings, progress=True)
    web_app = create_app(services)
    services.ready()
    console.print(
        f"[bold green]Support bot ready[/] on http://{settings.host}:{settings.port}/ "
        f"({len(services.kb.entries)} entries, threshold "
        f"{services.engine.responder.confidence.threshold:.3f})"
    )
    if settings.dashboard_token:
        console.print(f"Dashboard on http://{settings.host}:{settings.port}/dashboard")
    else:
        console.print("Dashboard disabled: set SUPPORTBOT_DASHBOARD_TOKEN to turn it on")
    uvicorn.run(web_app, host=settings.host, port=settings.port, log_level="info")


def _prepare_shared_state(host: str | None, port: int | None) -> tuple[int, str]:
    """Migrate the database, make sure the knowledge base is built (from the bundled sample
    on first start, re-embedded after a model change) and the model exported for ONNX Runtime
    where the settings ask for it; returns the number of entries and the embedding back-end."""
    from bot.service import open_kb
    from bot.storage import db

    settings = cli_settings(host=host, port=port)
    db.migrate(settings.db_url)
    kb = open_kb(settings, progress=True)
    # Choosing the back-end exports the model if it is not yet: here, once, rather than in
    # every worker at the same time (an index built before ONNX Runtime was the default).
    return len(kb.entries), kb.embedder.backend


def _run_workers(
    workers: int, *, host: str | None, port: int | None, verbose: bool, log_format: str
) -> None:
    """`supportbot run --workers N`: uvicorn's N processes, each building its own services."""
    import os

    import uvicorn

    from bot.app import LOG_FORMAT_ENV, LOG_LEVEL_ENV
    from bot.storage import db

    settings = cli_settings(host=host, port=port)
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
        entries, backend = pool.submit(_prepare_shared_state, host, port).result()
    os.environ[LOG_FORMAT_ENV] = log_format
    os.environ[LOG_LEVEL_ENV] = "DEBUG" if verbose else "INFO"
    # /metrics sums every worker's counters (monitoring.telemetry): a fresh folder per run, as
    # files left by an earlier run would be counted again.

    from monitoring.telemetry import MULTIPROC_DIR_ENV

    metrics_dir = tempfile.TemporaryDirectory(prefix="supportbot-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir.name
    console.print(
        f"[bold green]Support bot starting {workers} workers[/] on "
        f"http://{settings.host}:{settings.port}/ ({entries} entries, embedded with "
        f"{'ONNX Runtime' if backend == 'onnx' else 'torch'}, database "
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

    services = build_services(cli_settings(), progress=True)
    run_console(services.engine, user=user, console=console)


@app.command("discord")
def discord_bot(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the bot in Discord servers and DMs (needs DISCORD_TOKEN; see docs/discord.md)."""
    from adapters.discord import load_discord_settings
    from adapters.discord import run as run_discord
    from bot.service import build_services

    setup_logging(verbose)
    settings = cli_settings()  # first: it reads <NAME>_FILE secrets (DISCORD_TOKEN_FILE) too
    discord_settings = load_discord_settings()  # fail fast, before the knowledge base loads
    services = build_services(settings, progress=True)
    services.ready()
    run_discord(discord_settings, services.engine)


@app.command("rasa-actions")
def rasa_actions(
    port: Annotated[int, typer.Option(help="Port of the action server.")] = 5055,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the bot's knowledge, handoff and feedback as Rasa custom actions (docs/rasa.md)."""
    from adapters.rasa import serve
    from bot.service import build_services

    setup_logging(verbose)
    services = build_services(cli_settings(), progress=True)
    services.ready()
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
